"""One source of truth for configuration: a dataclass schema per entry point.

Each option is declared once, as a dataclass field made with `option(default, help)`. From that
declaration come the default, the type check, the `--name` CLI flag and its help text. A YAML file
(`--config presets.yaml`) overrides defaults, and CLI flags override the YAML:

    defaults (schema)  <  YAML file given with --config  <  command-line flags

Options are grouped by concern (run, model, symbolic, data, and each stage's own), one dataclass per
group; an entry's schema inherits the groups it reads, so a shared option is never declared twice,
and `--help` prints one section per group (titled by the group's docstring). A YAML preset may
serve several entry points (e.g. demo/demo.yaml for all stages): top-level keys are options of
every entry that reads the file, and a mapping named after an entry's section (its script name, e.g.
`fine_tune_decoders:`) holds options for that entry only, overriding the top level. Any other key
is an error, so typos do not pass silently.

A schema may list `unused_options` (with `unused_reason`): options of a group it inherits that
this entry does not read (stage 3 takes its VSA engine from the map files, for one). They are accepted, so shared presets
and old command lines keep working, but not listed in `--help`; given on the command line they
print a note that they have no effect. `group_titles` can say what a shared group means for one
entry. `positional_options` names list options given as the command's plain arguments (ask's
questions) instead of a `--name` flag, `flag_options` bool options given as a bare `--name`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from neurosymbolic_llm.pipeline import paths
from neurosymbolic_llm.pipeline.errors import ConfigError, echo
from neurosymbolic_llm.symbolic.problem_types import PROBLEM_TYPES

# The paper trains on eight types and holds addition and division out, to see what the gate does
# with problems the encoder never learned.
UNSEEN_TYPES_DEFAULT = ("addition", "division")
TRAINED_TYPES_DEFAULT = [p for p in PROBLEM_TYPES if p not in UNSEEN_TYPES_DEFAULT]


def option(default: Any, help: str, *, choices: Optional[Sequence[Any]] = None,
           check: Optional[typing.Callable[[Any], None]] = None) -> Any:
    """Declare one option: its default and its help text (the type comes from the annotation).

    `check(value)` raises ConfigError for a value the type allows but the option does not (the run
    name). `--help` appends "(default: ...)" unless the help text already says what the default means."""
    meta = {"help": help, "choices": choices, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


def check_run_name(name: str) -> None:
    """--run_name: empty (today's date) or a plain name (paths.check_run_name, the one rule)."""
    if name:
        paths.check_run_name(name, "option 'run_name'")


def known_types(option_name: str) -> typing.Callable[[Any], None]:
    """A check that every name of a problem-type list option is one of the ten (before any model loads)."""
    def check(names) -> None:
        unknown = [n for n in names if n not in PROBLEM_TYPES]
        if unknown:
            raise ConfigError(f"option '{option_name}': unknown problem type {echo(unknown[0])} "
                              f"(known: {', '.join(PROBLEM_TYPES)})")
    return check


# ----------------------------------------------------------------------------- shared groups
@dataclass
class RunOptions:
    """run: name, outputs, logging, seed and device"""
    run_name: str = option("", "name of the run; output folders and files are named after it: letters, digits "
                               "and ._- only (default: today's date)", check=check_run_name)
    log_wandb: bool = option(False, "log to Weights & Biases (online when logged in, offline otherwise): 0|1|true|false")
    wandb_project: str = option("", "wandb project (default: 'Symbolic LLM', one project for every stage, so that "
                                    "the stages of one run name form one wandb group)")
    wandb_group: str = option("", "wandb group of this run (default: the run name); one group for the runs of one "
                                  "experiment (e.g. R, R_lora, R_cot) makes it one line on the project page")
    programs_dir: str = option("", "root for models/, results/ and gathered_data_*/ (default: the Programs folder)")
    seed: int = option(42, "seed for data order, few-shot examples and initialisation")
    device: str = option("", "cpu or cuda (default: cuda when available)")


@dataclass
class ModelOptions:
    """model: the Llama checkpoint and how it runs"""
    chpt_dir: str = option("~/.llama/checkpoints/Llama3.1-8B-Instruct", "the model: a Meta folder (params.json, consolidated.*.pth), a Hugging Face folder (config.json, *.safetensors, tokenizer.json) or a .gguf file")
    tokenizer_path: str = option("", "Meta folders only: tokenizer.model (default: <chpt_dir>/tokenizer.model, else the one in llama_models)")
    max_seq_len: int = option(2048, "longest prompt plus answer the model must hold")
    model_parallel_size: int = option(0, "model-parallel ranks per model under torchrun (default 0: the number of .pth shards)")
    dtype: str = option("", "float32, bfloat16 or float16 (default: bf16 on cuda, float32 on cpu)")


@dataclass
class SymbolicOptions:
    """symbolic: the VSA engine and the problems' number format"""
    VSA_dim: int = option(2048, "dimension of the vector-symbolic code")
    max_digits: int = option(10, "digit positions of every encoded number (leading zeros included)")
    vsa_seed: int = option(4, "seed of the VSA codebook")
    possible_problems: list[str] = option(list(PROBLEM_TYPES), "problem types the engine knows (order fixes their atoms)")
    complexity: int = option(2, "operands have at most complexity+1 digits")
    limit_solution_digits: bool = option(True, "reduce multiplication and lcm answers mod 10^(complexity+1)")


@dataclass
class DataOptions:
    """data: the three splits (CSV files, or random problems)"""
    training_data_df_path: str = option("", "training CSV (problem_type,x,y,question,solution) (default: none, random problems)")
    val_data_df_path: str = option("", "validation CSV (default: none, random problems)")
    testing_data_df_path: str = option("", "test CSV (default: none, random problems)")
    problem_type: list[str] = option(TRAINED_TYPES_DEFAULT, "problem types seen in training (random problems are drawn from them)",
                                     check=known_types("problem_type"))
    testing_problems: list[str] = option(list(PROBLEM_TYPES), "problem types evaluated on the test split",
                                          check=known_types("testing_problems"))
    x_gt_y: bool = option(True, "random problems have x > y")


# ----------------------------------------------------------------------------- parsing
def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 0|1|true|false, got {text!r}")


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(name: str, tp: Any, value: Any, source: str, default: Any = None) -> Any:
    """Convert a YAML or CLI value to the schema type `tp`; errors name the option and the source.

    Floats must be finite (NaN or inf in a learning rate or a ridge only ends in NaN weights),
    except that an option whose `default` is infinite (a limit that is off) takes inf too."""
    tp = _unwrap_optional(tp)
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. int | str: the first type that reads the value
        alternatives = [a for a in typing.get_args(tp) if a is not type(None)]
        for alt in alternatives:
            try:
                return _coerce(name, alt, value, source, default)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: option {name!r}: cannot read {echo(value)} as {_type_name(tp)}")
    try:
        if tp is bool:
            return value if isinstance(value, bool) else parse_bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError("not an integer")
            if tp is int and isinstance(value, bool):
                raise ValueError("a boolean is not an integer")
            out = tp(value)
            no_limit = isinstance(default, float) and math.isinf(default)  # inf means "off" here
            if tp is float and not math.isfinite(out) and not (math.isinf(out) and no_limit):
                raise ValueError("not a finite number" + ("" if math.isnan(out) else
                                                          "; only an option whose default is inf takes inf"))
            return out
        if origin is list:
            (item,) = typing.get_args(tp)
            if isinstance(value, str):
                text = value.strip()
                value = load_yaml(text, source) if text.startswith("[") else [v for v in text.replace(",", " ").split()]
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_coerce(name, item, v, source) for v in value]
        if origin is dict:
            key_t, val_t = typing.get_args(tp)
            if isinstance(value, str):
                value = load_yaml(value, source) or {}
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return {_coerce(name, key_t, k, source): _coerce(name, val_t, v, source) for k, v in value.items()}
    except (ValueError, TypeError, argparse.ArgumentTypeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: option {name!r}: cannot read {echo(value)} as {_type_name(tp)} "
                          f"({echo(str(exc), quote=False)})") from None
    raise ConfigError(f"option {name!r}: unsupported type {tp!r} in the schema")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _fields(schema: type) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        f.type = hints[f.name]
        out[f.name] = f
    return out


# A config holds tens of values; anchors and aliases may share a few, but a document whose values,
# written out, would be millions of nodes ("billion laughs": a few hundred bytes of nested aliases)
# is refused before anything prints or copies it.
YAML_NODE_LIMIT = 100_000


def load_yaml(text: str, source: str) -> Any:
    """yaml.safe_load, refusing a document whose aliases expand to more than YAML_NODE_LIMIT nodes."""
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: an integer of > 4300 digits
        raise ConfigError(f"{source}: not valid YAML ({echo(' '.join(str(exc).split()), 300, quote=False)})") from None
    budget = [YAML_NODE_LIMIT]

    def count(node: Any) -> None:  # counts every node as written out, shared ones each time they appear
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(f"{source}: its aliases expand to more than {YAML_NODE_LIMIT} values "
                              f"(a YAML alias bomb?); write the values out instead")
        if isinstance(node, dict):
            for k, v in node.items():
                count(k)
                count(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                count(v)

    count(data)
    return data


def read_yaml(path: str | Path, schema: type) -> dict[str, Any]:
    """Option values for `schema` from a YAML file: top-level options, then the schema's section."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          f"save the config file as UTF-8") from None
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values at the top level")
    fields, section = _fields(schema), schema.config_section
    values, unknown = {}, []
    for key, val in data.items():
        if not isinstance(key, str):
            unknown.append(echo(str(key), 40, quote=False))
        elif key in fields:
            values[key] = val
        elif not isinstance(val, dict):  # a mapping that is no option is another entry's section
            unknown.append(echo(key, 40, quote=False))
    section_values = data.get(section) or {}
    if not isinstance(section_values, dict):
        raise ConfigError(f"{path}: section {section!r} must be a mapping of option names to values")
    unknown += [f"{section}.{echo(str(k), 40, quote=False)}" for k in section_values if k not in fields]
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) for {section}: {echo(', '.join(unknown), 300, quote=False)}")
    return {**values, **section_values}


def groups(schema: type) -> list[tuple[str, list[str]]]:
    """(title, option names) of each option group of `schema`, in the schema's base-class order;
    options declared on the schema itself come first. Unused options are left out. A group's title
    is its docstring's first line, or the schema's `group_titles[group class name]`."""
    unused = set(getattr(schema, "unused_options", ()))
    declared = set(_fields(schema))
    out, seen = [], set()
    for cls in schema.__mro__:
        if not dataclasses.is_dataclass(cls):
            continue
        names = [n for n in cls.__dict__.get("__annotations__", {}) if n in declared and n not in seen]
        seen.update(names)
        names = [n for n in names if n not in unused]
        if names:
            title = getattr(schema, "group_titles", {}).get(cls.__name__) or cls.__doc__.strip().splitlines()[0]
            out.append((title, names))
    return out


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    if "default" in text:  # the text says what the default means; "(default: '')" would only confuse
        return text
    return f"{text} (default: {_default(f)!r})"


def build_parser(schema: type, description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description or schema.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="", help="YAML file of option values (CLI flags override it)")
    fields = _fields(schema)
    positional = getattr(schema, "positional_options", ())
    for name in positional:  # a list option given as the command's arguments
        parser.add_argument(name, nargs="*", default=argparse.SUPPRESS, help=_help(fields[name]))
    for title, names in groups(schema):
        group = parser.add_argument_group(title)
        for name in names:
            if name in positional:
                continue
            f = fields[name]
            if name in getattr(schema, "flag_options", ()):  # a bool given as a bare --name
                group.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, action="store_const",
                                   const=True, help=_help(f))
                continue
            group.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS,
                               metavar=_type_name(_unwrap_optional(f.type)).upper(), help=_help(f))
    for name in getattr(schema, "unused_options", ()):
        parser.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def parse_config(schema: type, argv: Optional[Sequence[str]] = None, description: str = ""):
    """Resolve an entry point's configuration: schema defaults < --config YAML < CLI flags."""
    parser = build_parser(schema, description)
    ns = vars(parser.parse_args(argv))
    config_path = ns.pop("config")
    fields = _fields(schema)
    values: dict[str, Any] = {}
    if config_path:
        for key, val in read_yaml(config_path, schema).items():
            values[key] = _coerce(key, fields[key].type, val, str(config_path), _default(fields[key]))
    unused = [k for k in ns if k in getattr(schema, "unused_options", ())]
    if unused:
        print(f"note: {', '.join('--' + k for k in unused)} {'has' if len(unused) == 1 else 'have'} no effect "
              f"here: {schema.unused_reason}", file=sys.stderr)
    for key, val in ns.items():
        values[key] = _coerce(key, fields[key].type, val, "command line", _default(fields[key]))
    cfg = schema(**values)
    for name, f in fields.items():
        choices = f.metadata.get("choices")
        if choices is not None and getattr(cfg, name) not in choices:
            raise ConfigError(f"option {name!r}: {echo(getattr(cfg, name))} is not one of {list(choices)}")
        if f.metadata.get("check") is not None:
            f.metadata["check"](getattr(cfg, name))
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

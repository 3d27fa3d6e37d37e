"""One source of truth for configuration: a dataclass schema per entry point.

Each option is declared once, as a dataclass field made with `option(default, help)`. From that
declaration come the default, the type check, the `--name` CLI flag and its help text. A YAML file
(`--config presets.yaml`) overrides defaults, and CLI flags override the YAML:

    defaults (schema)  <  YAML file given with --config  <  command-line flags

Options are grouped by concern (run, model, symbolic, data, and each stage's own), one dataclass per
group; an entry's schema inherits the groups it reads, so a shared option is never declared twice,
and `--help` prints one section per group (titled by the group's docstring). A YAML preset may
serve every entry point (e.g. demo/demo.yaml): top-level keys are options of every entry that reads
the file, a mapping named after an entry's section (e.g. `fine_tune_decoders:`) holds options for
that entry only, and the options of other entries, or of the stage that saved the file, are ignored
with a note; any other key is an error, so typos do not pass silently (config_files.py).

Every value is checked while parsing, before any model loads: its type (a YAML boolean only where a
bool is expected), `choices`, the bounds `low`/`high`/`above` of `option(...)` and its `check`. An
option may have `aliases` (other flag and YAML names) and `names` (readable words for its values).

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
import importlib.util
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from neurosymbolic_llm.pipeline import paths
from neurosymbolic_llm.pipeline.config_files import load_yaml, read_yaml
from neurosymbolic_llm.pipeline.errors import ConfigError, echo
from neurosymbolic_llm.symbolic.problem_types import PROBLEM_TYPES

# The paper trains on eight types and holds addition and division out, to see what the gate does
# with problems the encoder never learned.
UNSEEN_TYPES_DEFAULT = ("addition", "division")
TRAINED_TYPES_DEFAULT = [p for p in PROBLEM_TYPES if p not in UNSEEN_TYPES_DEFAULT]


def option(default: Any, help: str, *, choices: Optional[Sequence[Any]] = None,
           check: Optional[typing.Callable[[Any], None]] = None, low: Optional[float] = None,
           high: Optional[float] = None, above: Optional[float] = None, aliases: Sequence[str] = (),
           names: Optional[dict[str, Any]] = None) -> Any:
    """Declare one option: its default and its one-line help text (the type comes from the annotation).

    Checked while parsing, before any model loads: `choices` (of each item of a list option),
    `low <= value <= high` and `value > above` (of each item of a list, each key and value of a
    mapping), and `check(value)`, which raises ConfigError for a value the type allows but the
    option does not (the run name). `aliases` are other names of the option (flags and YAML keys),
    `names` readable words for its values ({"only": 2}: `--test_baseline only` is 2).
    `--help` appends "(default: ...)" unless the help text already says what the default means."""
    meta = {"help": help, "choices": choices, "check": check, "low": low, "high": high, "above": above,
            "aliases": tuple(aliases), "names": dict(names or {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit


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


def _wandb_logged_in() -> bool:
    """The login test of pipeline/tracking.py's wandb mode (an API key, or a netrc entry)."""
    netrc = Path.home() / ".netrc"
    return bool(os.environ.get("WANDB_API_KEY")) or netrc.is_file() and "api.wandb.ai" in netrc.read_text()


def check_wandb(on: bool) -> None:
    """--log_wandb 1: wandb installed, and a login when WANDB_MODE asks for online logging (before any
    model loads; wandb.init would fail only after it)."""
    mode = os.environ.get("WANDB_MODE", "")
    if not on or mode == "disabled":
        return
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("option log_wandb: wandb is not installed (pip install wandb), or run with --log_wandb 0")
    if mode not in ("", "online", "offline", "dryrun"):
        raise ConfigError(f"option log_wandb: WANDB_MODE={echo(mode)} is none of online, offline, disabled")
    if mode == "online" and not _wandb_logged_in():
        raise ConfigError("option log_wandb: WANDB_MODE=online needs a wandb login (wandb login, or WANDB_API_KEY); "
                          "unset WANDB_MODE to log offline")


# ----------------------------------------------------------------------------- shared groups
@dataclass
class RunOptions:
    """run: name, outputs, logging, seed and device"""
    run_name: str = option("", "name of the run and its outputs: letters, digits and ._- only (default: today's date)",
                           check=check_run_name)
    log_wandb: bool = option(False, "log to Weights & Biases (online when logged in, offline otherwise): 0|1|true|false",
                             check=check_wandb)
    wandb_project: str = option("", "wandb project (default: 'Symbolic LLM', one project for every stage)")
    wandb_group: str = option("", "wandb group of this run (default: the run name; docs/RUNNING.md)")
    programs_dir: str = option("", "root for models/, results/ and gathered_data_*/ (default: the Programs folder)")
    seed: int = option(42, "seed for data order, few-shot examples and initialisation", low=0, high=SEED_MAX)
    device: str = option("", "cpu or cuda (default: cuda when available)")


@dataclass
class ModelOptions:
    """model: the Llama checkpoint and how it runs"""
    chpt_dir: str = option("~/.llama/checkpoints/Llama3.1-8B-Instruct", "the model: a Meta folder, a Hugging Face "
                           "folder or a .gguf file (docs/RUNNING.md)", aliases=("ckpt_dir",))
    tokenizer_path: str = option("", "Meta folders only: tokenizer.model (default: <chpt_dir>/tokenizer.model, else "
                                     "the one in llama_models)")
    max_seq_len: int = option(2048, "longest prompt plus answer the model must hold", low=1)
    model_parallel_size: int = option(0, "model-parallel ranks per model under torchrun (default 0: the number of .pth "
                                         "shards)", low=0)
    dtype: str = option("", "float32, bfloat16 or float16 (default: bf16 on cuda, float32 on cpu)")


@dataclass
class SymbolicOptions:
    """symbolic: the VSA engine and the problems' number format"""
    VSA_dim: int = option(2048, "dimension of the vector-symbolic code", low=8, high=2**20, aliases=("vsa_dim",))
    max_digits: int = option(10, "digit positions of every encoded number (leading zeros included)", low=1, high=18)
    vsa_seed: int = option(4, "seed of the VSA codebook", low=0, high=SEED_MAX)
    possible_problems: list[str] = option(list(PROBLEM_TYPES), "problem types the engine knows (order fixes their atoms)")
    complexity: int = option(2, "operands have at most complexity+1 digits", low=0, high=17)  # 10^18 fits int64
    limit_solution_digits: bool = option(True, "reduce multiplication and lcm answers mod 10^(complexity+1)")


@dataclass
class DataOptions:
    """data: the three splits (CSV files, or random problems)"""
    training_data_df_path: str = option("", "training CSV (problem_type,x,y,question,solution) (default: none, random "
                                            "problems)", aliases=("train_csv",))
    val_data_df_path: str = option("", "validation CSV (default: none, random problems)", aliases=("val_csv",))
    testing_data_df_path: str = option("", "test CSV (default: none, random problems)", aliases=("test_csv",))
    problem_type: list[str] = option(TRAINED_TYPES_DEFAULT, "problem types seen in training (random problems are drawn "
                                     "from them)", check=known_types("problem_type"), aliases=("train_types",))
    testing_problems: list[str] = option(list(PROBLEM_TYPES), "problem types evaluated on the test split",
                                          check=known_types("testing_problems"), aliases=("test_types",))
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
    optional = _unwrap_optional(tp) is not tp
    tp = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: option {name!r}: no value (expected {_type_name(tp)})")
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
            if not isinstance(value, (bool, int, str)) or isinstance(value, float):
                raise ValueError(f"expected 0|1|true|false, got a {type(value).__name__}")
            return value if isinstance(value, bool) else parse_bool(value)
        if tp in (int, float, str):
            if isinstance(value, bool):  # YAML reads an unquoted yes/no/on/off/true/false as a boolean
                raise ValueError(f"a boolean where {'a string' if tp is str else 'a number'} is expected; "
                                 f"YAML reads unquoted yes/no/on/off/true/false as booleans")
            if not isinstance(value, (int, float, str)):
                raise ValueError(f"a {type(value).__name__} where {'a string' if tp is str else 'a number'} is expected")
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError("not an integer")
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
                value = (load_yaml(text, f"{source}: option {name!r}") if text.startswith("[")
                         else text.replace(",", " ").split())
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_coerce(name, item, v, source) for v in value]
        if origin is dict:
            key_t, val_t = typing.get_args(tp)
            if isinstance(value, str):
                value = load_yaml(value, f"{source}: option {name!r}") or {}
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


def _flags(f: dataclasses.Field) -> list[str]:
    return [f"--{f.name}", *(f"--{a}" for a in f.metadata.get("aliases", ()))]


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
                group.add_argument(*_flags(f), dest=name, default=argparse.SUPPRESS, action="store_const",
                                   const=True, help=_help(f))
                continue
            metavar = "|".join(f.metadata.get("names") or ()) or _type_name(_unwrap_optional(f.type)).upper()
            group.add_argument(*_flags(f), dest=name, default=argparse.SUPPRESS, metavar=metavar, help=_help(f))
    for name in getattr(schema, "unused_options", ()):
        parser.add_argument(*_flags(fields[name]), dest=name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _read(f: dataclasses.Field, value: Any, source: str) -> Any:
    """A YAML or CLI value of option `f` in its schema type (a readable name of a value first)."""
    names = f.metadata.get("names") or {}
    if isinstance(value, str) and value.strip().lower() in names:
        value = names[value.strip().lower()]
    return _coerce(f.name, f.type, value, source, _default(f))


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range_text(low: Any, high: Any, above: Any) -> str:
    if low is not None and high is not None:
        return f"from {_num(low)} to {_num(high)}"
    parts = ([f"above {_num(above)}"] if above is not None else []) + ([f"at least {_num(low)}"] if low is not None else [])
    return " and ".join(parts + ([f"at most {_num(high)}"] if high is not None else []))


def check_value(f: dataclasses.Field, value: Any, source: str) -> None:
    """`f`'s choices and bounds (option(...)) on `value`: each item of a list, each value of a mapping."""
    meta = f.metadata
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    choices, low, high, above = meta.get("choices"), meta.get("low"), meta.get("high"), meta.get("above")
    for v in items:
        if choices is not None and v not in choices:
            named = f" (or {'|'.join(meta['names'])})" if meta.get("names") else ""
            raise ConfigError(f"{source}: option {f.name!r}: {echo(v)} is not one of "
                              f"{'|'.join(map(str, choices))}{named}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if (low is not None and v < low) or (high is not None and v > high) or (above is not None and not v > above):
            raise ConfigError(f"{source}: option {f.name} must be {_range_text(low, high, above)} (got {_num(v)})")


def parse_config(schema: type, argv: Optional[Sequence[str]] = None, description: str = ""):
    """Resolve an entry point's configuration: schema defaults < --config YAML < CLI flags. Every
    value is checked against its option's type, choices and bounds here, before any model loads."""
    parser = build_parser(schema, description)
    ns = vars(parser.parse_args(argv))
    config_path = ns.pop("config")
    fields = _fields(schema)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_path:
        for key, val in read_yaml(config_path, schema).items():
            values[key], sources[key] = _read(fields[key], val, str(config_path)), str(config_path)
    unused = [k for k in ns if k in getattr(schema, "unused_options", ())]
    if unused:
        print(f"note: {', '.join('--' + k for k in unused)} {'has' if len(unused) == 1 else 'have'} no effect "
              f"here: {schema.unused_reason}", file=sys.stderr)
    for key, val in ns.items():
        values[key], sources[key] = _read(fields[key], val, "command line"), "command line"
    for key, val in values.items():
        check_value(fields[key], val, sources[key])
    cfg = schema(**values)
    for name, f in fields.items():
        if f.metadata.get("check") is not None:
            f.metadata["check"](getattr(cfg, name))
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

"""YAML config files (`--config FILE`), read strictly: what options.py's schemas take from a file.

One file may serve every command: top-level keys are options of every command that reads the file,
a mapping named after a command's section (`train_encoders_and_decoders:`, `fine_tune_decoders:`)
holds options for that command only and overrides the top level. A key that is an option of
another command only (stage 2's `training_epochs` read by stage 3) is ignored with one note line,
and so is, in a configuration a stage saved (`config_<stage>.yaml`, pipeline/tracking.py), an
option of the saving stage's own groups (stage 2's `learning_rate` is not stage 3's). Everything
else is an error of one line naming the file and the key: a key of no command, a misspelled
section, a key given twice (YAML itself would keep the last), a value of the wrong kind.
"""
from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from neurosymbolic_llm.pipeline.errors import ConfigError, echo

# A config holds tens of values; anchors and aliases may share a few, but a document whose values,
# written out, would be millions of nodes ("billion laughs": a few hundred bytes of nested aliases)
# is refused before anything prints or copies it.
YAML_NODE_LIMIT = 100_000
# The mapping every saved config_<stage>.yaml carries besides the options (pipeline/tracking.py).
RUN_RECORD = "run_record"

# Every command's schema and which schema saved each stage's config_<stage>.yaml; configs.py
# registers them (register_schemas), so that a key of any command is known to all.
ENTRY_SCHEMAS: list[type] = []
STAGE_SCHEMAS: dict[str, type] = {}


def register_schemas(schemas: typing.Iterable[type], stage_schemas: dict[str, type]) -> None:
    ENTRY_SCHEMAS.extend(s for s in schemas if s not in ENTRY_SCHEMAS)
    STAGE_SCHEMAS.update(stage_schemas)


class _DuplicateKey(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (SafeLoader keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in lines:
                        raise _DuplicateKey(f"key {echo(str(key), 60)} is given twice (lines {lines[key]} and "
                                            f"{line}); keep one")
                    lines[key] = line
                except TypeError:  # an unhashable key: the base constructor names it
                    continue
        return super().construct_mapping(node, deep)


def load_yaml(text: str, source: str) -> Any:
    """The YAML document `text`, strictly: duplicated keys and alias bombs (more than YAML_NODE_LIMIT
    nodes written out) are one ConfigError naming `source`."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc}") from None
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


def _owner(schema: type, name: str) -> type:
    """The option group (dataclass) of `schema` that declares option `name`."""
    return next(c for c in schema.__mro__ if name in c.__dict__.get("__annotations__", {}))


def _aliases(schema: type) -> dict[str, str]:
    """{alias: option name} of `schema`'s options (option(..., aliases=...))."""
    return {a: f.name for f in dataclasses.fields(schema) for a in f.metadata.get("aliases", ())}


def read_file(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file."""
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
    return data


def _named(mapping: dict, aliases: dict[str, str], path: Path, where: str) -> dict:
    """`mapping` with aliases replaced by option names; an option given under both names is an error."""
    out = {}
    for key, val in mapping.items():
        name = aliases.get(key, key) if isinstance(key, str) else key
        if name in out:
            raise ConfigError(f"{path}: {where}{name!r} is given twice (as {name} and its alias {key}); keep one")
        out[name] = val
    return out


def read_yaml(path: str | Path, schema: type) -> dict[str, Any]:
    """Option values for `schema` from a YAML file: top-level options, then the schema's section.
    Prints one note line naming the keys it ignores as other commands' options."""
    path = Path(path).expanduser()
    data = read_file(path)
    fields, section = {f.name for f in dataclasses.fields(schema)}, schema.config_section
    aliases = _aliases(schema)
    record = data.get(RUN_RECORD)
    writer = STAGE_SCHEMAS.get(record.get("stage")) if isinstance(record, dict) else None
    sections = {s.config_section for s in ENTRY_SCHEMAS} | {section}
    others = {f.name for s in ENTRY_SCHEMAS for f in dataclasses.fields(s)} | set().union(*map(_aliases, ENTRY_SCHEMAS))
    values, unknown, ignored = {}, [], []
    for key, val in _named(data, aliases, path, "").items():
        if not isinstance(key, str):
            unknown.append(echo(str(key), 40, quote=False))
        elif key == RUN_RECORD:
            continue  # what the saving stage recorded about itself, not an option
        elif key in fields and not (writer is not None and key in {f.name for f in dataclasses.fields(writer)}
                                    and _owner(writer, key) not in schema.__mro__):
            values[key] = val
        elif key in sections:
            if not isinstance(val, dict) and val is not None:
                raise ConfigError(f"{path}: section {key!r} must be a mapping of option names to values")
            if key != section:  # another command's section: its keys must be that command's options
                known = set().union(*({f.name for f in dataclasses.fields(s)} | set(_aliases(s))
                                      for s in ENTRY_SCHEMAS if s.config_section == key))
                unknown += [f"{key}.{echo(str(k), 40, quote=False)}" for k in (val or {}) if k not in known]
        elif key in others or key in fields:  # another command's option (or the saving stage's own)
            ignored.append(key)
        else:
            unknown.append(echo(key, 40, quote=False) + (" (a mapping: no command has this section; sections: "
                                                         f"{', '.join(sorted(sections))})" if isinstance(val, dict)
                                                         else ""))
    section_values = _named(data.get(section) or {}, aliases, path, f"{section}.")
    unknown += [f"{section}.{echo(str(k), 40, quote=False)}" for k in section_values if k not in fields]
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) for {section}: {echo(', '.join(unknown), 300, quote=False)}")
    if ignored:
        print(f"note: {path}: {len(ignored)} option(s) of other stages ignored here: "
              f"{echo(', '.join(ignored), 200, quote=False)}", file=sys.stderr)
    return {**values, **section_values}

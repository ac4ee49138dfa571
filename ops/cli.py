"""Command-line conventions shared by ``main.py``, ``test_models.py`` and the tools.

* Help: every option's default is stated once (``HelpFormatter``).
* Spelling: each option has one name across the project, its published one;
  ``-``/``_`` twins (``--batch-size`` and ``--batch_size``) and the older
  names of the tools (``alias``) are accepted too (``add_aliases``), so
  command lines written for either keep working.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's lines; appends ``(default: X)`` unless the help text already states its
    default or there is none to state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        return super()._get_help_string(action)


def _twin(option: str) -> str | None:
    """``--a_b`` <-> ``--a-b`` (the part after ``--``); None for short options and names without either."""
    if not option.startswith("--"):
        return None
    name = option[2:]
    if "_" in name:
        return "--" + name.replace("_", "-")
    if "-" in name:
        return "--" + name.replace("-", "_")
    return None


class _Alias(argparse.Action):
    """Another name of ``target``: parsed like it, then handed on under ``target``'s own name (so that
    actions that look at the option's name, like ``--x``/``--no-x``, behave alike)."""

    def __init__(self, name: str, target: argparse.Action, canonical: str) -> None:
        super().__init__([name], target.dest, nargs=target.nargs, const=target.const, default=argparse.SUPPRESS,
                         type=target.type, choices=target.choices, help=argparse.SUPPRESS, metavar=target.metavar)
        self.target, self.canonical = target, canonical

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        self.target(parser, namespace, values, self.canonical)


def _alias(name: str, target: argparse.Action, canonical: str) -> argparse.Action:
    """The action that ``name`` parses to: ``target`` itself (so that a required option given under an alias
    counts as given), or an :class:`_Alias` where ``target`` tells ``--x`` from ``--no-x`` by the name."""
    return _Alias(name, target, canonical) if isinstance(target, argparse.BooleanOptionalAction) else target


def add_aliases(parser: argparse.ArgumentParser, aliases: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """Accept the ``-``/``_`` twin of every long option, and ``aliases`` (``{other name: option}``).

    Aliases are accepted but not listed in ``--help``, which shows each option
    under its one name. An alias that would shadow another option is refused
    (a programming error, raised at start-up).
    """
    table = parser._option_string_actions
    extra: dict[str, argparse.Action] = {}
    for action in parser._actions:
        for option in action.option_strings:
            twin = _twin(option)
            if twin and twin not in table and twin not in extra:
                extra[twin] = _alias(twin, action, option)
    for alias, option in (aliases or {}).items():
        if option not in table:
            raise ValueError(f"alias {alias} names no option {option}")
        for name in (alias, _twin(alias)):
            if name is None:
                continue
            if name in table:
                raise ValueError(f"alias {name} would shadow option {name}")
            extra[name] = _alias(name, table[option], option)
    table.update(extra)
    return parser

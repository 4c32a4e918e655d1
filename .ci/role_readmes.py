"""Keep every role's README.md variable table in step with its meta/argument_specs.yml.

The README's prose is written by hand; the part between the two markers below is
generated from the argument specs. `python .ci/role_readmes.py` rewrites that part,
`--check` only reports READMEs that are out of date (exit 1), for CI and the unit test.
"""

import argparse
import os
import re
import sys

import yaml

BEGIN = "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml by .ci/role_readmes.py, do not edit -->"
END = "<!-- END VARIABLES -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Ansible's doc markup -> Markdown code spans.
_MARKUP = re.compile(r"\b([CVOMPIEBU])\(([^()]*(?:\([^()]*\)[^()]*)*)\)")


def _markup(text):
    def repl(match):
        kind, body = match.group(1), match.group(2)
        if kind in ("I", "B"):
            return body
        if kind in ("O", "V") and "#" in body:
            # O(fqcn#type:option=value): keep the option part.
            body = body.split(":", 1)[1] if ":" in body else body
        if kind == "P":
            name, dummy, plugin_type = body.partition("#")
            return "`%s` %s" % (name, plugin_type or "plugin")
        if kind == "U":
            return "<%s>" % body
        return "`%s`" % body
    return _MARKUP.sub(repl, text)


def _text(description):
    if description is None:
        return ""
    if isinstance(description, str):
        description = [description]
    return " ".join(_markup(" ".join(str(line).split())) for line in description)


def _default(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "`%s`" % ("true" if value else "false")
    if isinstance(value, (dict, list)):
        dumped = yaml.safe_dump(value, default_flow_style=True, width=10000).strip()
        return "`%s`" % dumped
    if value == "":
        return '`""`'
    return "`%s`" % value


def _cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def variables(spec_path):
    """(name, spec) for every option and sub-option, in the order of the spec; sub-options as parent[].name."""
    with open(spec_path) as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    rows = []

    def walk(options, prefix):
        for name, spec in (options or {}).items():
            full = prefix + name
            rows.append((full, spec))
            if spec.get("options"):
                walk(spec["options"], full + ("[]." if spec.get("type") == "list" else "."))

    for entry in specs.values():
        walk(entry.get("options"), "")
    return rows


def table(spec_path):
    lines = [
        BEGIN,
        "",
        "| Variable | Type | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for name, spec in variables(spec_path):
        kind = spec.get("type", "str")
        if spec.get("elements"):
            kind += " of " + spec["elements"]
        if spec.get("choices"):
            kind += " (%s)" % ", ".join(str(c) for c in spec["choices"])
        default = "required" if spec.get("required") else _default(spec.get("default"))
        lines.append("| `%s` | %s | %s | %s |" % (name, _cell(kind), _cell(default), _cell(_text(spec.get("description")))))
    lines += ["", END]
    return "\n".join(lines)


def roles(root=ROOT):
    base = os.path.join(root, "roles")
    return sorted(r for r in os.listdir(base) if os.path.isfile(os.path.join(base, r, "meta", "argument_specs.yml")))


def render(role, root=ROOT):
    """(path, current text, wanted text) of a role's README."""
    path = os.path.join(root, "roles", role, "README.md")
    with open(path) as handle:
        current = handle.read()
    if BEGIN not in current or END not in current:
        raise SystemExit("%s: the markers are missing (%s ... %s)" % (path, BEGIN, END))
    head, rest = current.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    wanted = head + table(os.path.join(root, "roles", role, "meta", "argument_specs.yml")) + tail
    return path, current, wanted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report READMEs that are out of date, change nothing")
    args = parser.parse_args(argv)
    stale = []
    for role in roles():
        path, current, wanted = render(role)
        if current != wanted:
            stale.append(path)
            if not args.check:
                with open(path, "w") as handle:
                    handle.write(wanted)
    for path in stale:
        print("%s %s" % ("out of date:" if args.check else "updated:", os.path.relpath(path, ROOT)))
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())

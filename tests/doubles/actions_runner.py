"""A GitHub Actions runner double for composite actions: runs an action.yml's own steps locally.

GitHub's runner is not available on the test machines, so the Action is tested by executing its
real `action.yml`, the way the runner does:

- inputs: the ones given, else the declared defaults (which may be expressions such as
  `${{ github.token }}`); an undeclared input is an error (GitHub only warns: a typo'd input
  would silently do nothing);
- `${{ }}` expressions: contexts (inputs, steps, github, runner, env), literals, `! == != < <=
  > >= && ||`, `.prop` and `['prop']`, and the functions always, success, failure, cancelled,
  contains, startsWith, endsWith, format, join, toJSON, fromJSON; GitHub's rules for truthiness,
  loose equality (strings compare case-insensitively) and `&&`/`||` returning an operand;
  an unknown context or function is an error, not an empty string;
- `if:` with an implicit `success() &&` unless the condition calls a status function;
- `run:` steps: `bash --noprofile --norc -eo pipefail` in the step's working-directory with
  its `env:`, GITHUB_ACTION_PATH, and a fresh GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and GITHUB_ENV
  file per step; outputs parsed in both forms (`name=value`, `name<<DELIM`); GITHUB_ENV lines
  carried to the later steps;
- `uses:` steps are not run: each is recorded with its evaluated `with:`, and a test can stand in
  for one (by action name without `@ref`) with a function that returns its outputs;
- the action's outputs are evaluated at the end.

    runner = CompositeRunner(REPO, workspace=repo_dir, temp=tmp, env=env, github={...},
                             uses={"actions/setup-python": lambda w: {"python-path": sys.executable}})
    result = runner.run({"policy": "policies/budget.yaml"})
    result.failed, result.outputs["verdict"], result.step("ci").outcome, result.summary
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

UsesStandIn = Callable[[dict[str, str]], "dict[str, str] | None"]


class ExpressionError(Exception):
    """An expression the runner (and GitHub) would reject or evaluate to nonsense."""


# -- expressions ------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|0x[0-9a-fA-F]+)"
    r"|(?P<str>'(?:[^']|'')*')"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,*])"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_-]*))"
)
_STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot parse {expr!r} at {expr[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


def _truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "") and not (isinstance(value, float) and value == 0)


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        try:
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return math.nan
    return math.nan


def _loose_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if type(a) is type(b) or (isinstance(a, (dict, list)) and isinstance(b, (dict, list))):
        return a is b or a == b
    return _number(a) == _number(b)


def to_string(value: Any) -> str:
    """How GitHub turns an expression's value into text (env values, inputs, `run:` scripts)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2)
    return str(value)


class _Parser:
    def __init__(self, expr: str, evaluator: Evaluator) -> None:
        self.expr = expr
        self.toks = _tokens(expr)
        self.i = 0
        self.ev = evaluator

    def parse(self) -> Any:
        value = self.or_()
        if self.i != len(self.toks):
            raise ExpressionError(f"unexpected {self.toks[self.i][1]!r} in {self.expr!r}")
        return value

    def _peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def _take(self, want: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise ExpressionError(f"unexpected end of {self.expr!r}")
        tok = self.toks[self.i]
        if want is not None and tok[1] != want:
            raise ExpressionError(f"expected {want!r}, got {tok[1]!r} in {self.expr!r}")
        self.i += 1
        return tok

    def or_(self) -> Any:
        value = self.and_()
        while self._peek() == "||":
            self._take()
            right = self.and_()
            value = value if _truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.equality()
        while self._peek() == "&&":
            self._take()
            right = self.equality()
            value = right if _truthy(value) else value
        return value

    def equality(self) -> Any:
        value = self.comparison()
        while self._peek() in ("==", "!="):
            op = self._take()[1]
            right = self.comparison()
            value = _loose_equal(value, right) == (op == "==")
        return value

    def comparison(self) -> Any:
        value = self.unary()
        while self._peek() in ("<", "<=", ">", ">="):
            op = self._take()[1]
            right = self.unary()
            if isinstance(value, str) and isinstance(right, str):
                a, b = value.casefold(), right.casefold()
            else:
                a, b = _number(value), _number(right)
            value = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return value

    def unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not _truthy(self.unary())
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while self._peek() in (".", "["):
            if self._take()[1] == ".":
                kind, name = self._take()
                if kind != "ident":
                    raise ExpressionError(f"expected a property name after '.' in {self.expr!r}")
                value = _property(value, name)
            else:
                key = self.or_()
                self._take("]")
                value = _property(value, key)
        return value

    def primary(self) -> Any:
        kind, text = self._take()
        if kind == "num":
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if text == "(":
            value = self.or_()
            self._take(")")
            return value
        if kind != "ident":
            raise ExpressionError(f"unexpected {text!r} in {self.expr!r}")
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if self._peek() == "(":
            self._take("(")
            args = []
            while self._peek() != ")":
                args.append(self.or_())
                if self._peek() == ",":
                    self._take(",")
            self._take(")")
            return self.ev.call(text, args)
        return self.ev.context(text)


def _property(value: Any, name: Any) -> Any:
    if isinstance(value, Mapping):
        if isinstance(name, str):
            for key in value:  # property names are case-insensitive
                if isinstance(key, str) and key.casefold() == name.casefold():
                    return value[key]
        return None
    if isinstance(value, list) and isinstance(name, (int, float)) and not isinstance(name, bool):
        index = int(name)
        return value[index] if 0 <= index < len(value) else None
    return None


class Evaluator:
    """Evaluates expressions against contexts and the status of the steps run so far."""

    def __init__(self, contexts: dict[str, Any], status: Callable[[], bool]) -> None:
        self.contexts = contexts
        self.failed = status

    def context(self, name: str) -> Any:
        if name not in self.contexts:
            raise ExpressionError(
                f"unknown context {name!r} (available: {', '.join(sorted(self.contexts))})"
            )
        return self.contexts[name]

    def call(self, name: str, args: list[Any]) -> Any:
        lowered = name.lower()
        if lowered == "always":
            return True
        if lowered == "success":
            return not self.failed()
        if lowered == "failure":
            return self.failed()
        if lowered == "cancelled":
            return False
        if lowered == "contains":
            hay, needle = args
            if isinstance(hay, list):
                return any(_loose_equal(x, needle) for x in hay)
            return to_string(needle).casefold() in to_string(hay).casefold()
        if lowered == "startswith":
            return to_string(args[0]).casefold().startswith(to_string(args[1]).casefold())
        if lowered == "endswith":
            return to_string(args[0]).casefold().endswith(to_string(args[1]).casefold())
        if lowered == "format":
            template, *values = args

            def fill(m: re.Match[str]) -> str:
                if m.group(0) in ("{{", "}}"):
                    return m.group(0)[0]
                return to_string(values[int(m.group(1))])

            return re.sub(r"\{\{|\}\}|\{(\d+)\}", fill, to_string(template))
        if lowered == "join":
            items, sep = args[0], (to_string(args[1]) if len(args) > 1 else ",")
            return (
                sep.join(to_string(x) for x in items)
                if isinstance(items, list)
                else to_string(items)
            )
        if lowered == "tojson":
            return json.dumps(args[0], indent=2)
        if lowered == "fromjson":
            return json.loads(to_string(args[0]))
        raise ExpressionError(f"function {name}() is not supported by the runner double")

    def evaluate(self, expr: str) -> Any:
        return _Parser(expr, self).parse()

    def render(self, value: Any) -> str:
        """A YAML value with `${{ }}` templates substituted, as text."""
        if not isinstance(value, str):
            return to_string(value)
        parts = re.split(r"\$\{\{(.*?)\}\}", value, flags=re.S)
        out = []
        for i, part in enumerate(parts):
            out.append(to_string(self.evaluate(part)) if i % 2 else part)
        return "".join(out)

    def condition(self, cond: Any) -> bool:
        if cond is None:
            return not self.failed()
        if isinstance(cond, bool):
            return cond and not self.failed()
        expr = str(cond).strip()
        m = re.fullmatch(r"\$\{\{(.*)\}\}", expr, flags=re.S)
        if m:
            expr = m.group(1)
        if not re.search(rf"\b({'|'.join(_STATUS_FUNCTIONS)})\s*\(", expr):
            expr = f"success() && ({expr})"
        return _truthy(self.evaluate(expr))


# -- running the steps ---------------------------------------------------------------------------


@dataclass
class StepResult:
    index: int
    id: str | None
    name: str
    outcome: str  # success | failure | skipped
    uses: str | None = None
    with_: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    seconds: float = 0.0


@dataclass
class ActionRun:
    steps: list[StepResult]
    outputs: dict[str, str]
    failed: bool

    def step(self, key: str) -> StepResult:
        """A step by id, else by name."""
        for s in self.steps:
            if s.id == key:
                return s
        for s in self.steps:
            if s.name == key:
                return s
        raise KeyError(f"no step {key!r} (steps: {[s.id or s.name for s in self.steps]})")

    @property
    def summary(self) -> str:
        return "".join(s.summary for s in self.steps)

    @property
    def log(self) -> str:
        """Everything the run steps printed, in order (for assertion messages)."""
        parts = []
        for s in self.steps:
            if s.outcome != "skipped" and s.uses is None:
                parts.append(
                    f"--- {s.name} [{s.outcome}, exit {s.returncode}]\n{s.stdout}{s.stderr}"
                )
        return "\n".join(parts)


def parse_output_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV syntax: `name=value` lines and `name<<DELIM` ... `DELIM` blocks."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"no closing delimiter {delimiter!r} for {name!r}")
            i += 1
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        else:
            raise ValueError(f"invalid line {line!r}")
    return values


class CompositeRunner:
    """Runs one composite action (`action_dir/action.yml`) in a simulated job."""

    def __init__(
        self,
        action_dir: Path,
        *,
        workspace: Path,
        temp: Path,
        env: Mapping[str, str],
        github: Mapping[str, Any],
        uses: Mapping[str, UsesStandIn] | None = None,
        timeout: float = 300,
    ) -> None:
        self.action_dir = Path(action_dir)
        self.action = yaml.safe_load((self.action_dir / "action.yml").read_text(encoding="utf-8"))
        if self.action.get("runs", {}).get("using") != "composite":
            raise ValueError("not a composite action")
        self.workspace = Path(workspace)
        self.temp = Path(temp)
        self.env = dict(env)
        self.github = {
            **github,
            "action_path": str(self.action_dir),
            "workspace": str(self.workspace),
        }
        self.uses = dict(uses or {})
        self.timeout = timeout

    def resolve_inputs(self, given: Mapping[str, Any]) -> dict[str, str]:
        declared = self.action.get("inputs") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ValueError(f"unexpected input(s) {unknown}; valid inputs are {sorted(declared)}")
        ev = Evaluator(
            {"github": self.github, "runner": self._runner(), "env": self.env}, lambda: False
        )
        values = {}
        for name, spec in declared.items():
            if name in given:
                values[name] = to_string(given[name])
            elif spec.get("required") and "default" not in spec:
                raise ValueError(f"input {name!r} is required")
            else:
                values[name] = ev.render(spec.get("default", ""))
        return values

    def _runner(self) -> dict[str, str]:
        return {"temp": str(self.temp), "os": "Linux", "arch": "X64", "name": "runner-double"}

    def run(self, inputs: Mapping[str, Any]) -> ActionRun:
        self.temp.mkdir(parents=True, exist_ok=True)
        steps_ctx: dict[str, Any] = {}
        state = {"failed": False}
        contexts = {
            "inputs": self.resolve_inputs(inputs),
            "steps": steps_ctx,
            "github": self.github,
            "runner": self._runner(),
            "env": self.env,
        }
        ev = Evaluator(contexts, lambda: state["failed"])
        carried_env: dict[str, str] = {}
        results = []
        for index, step in enumerate(self.action["runs"]["steps"]):
            result = StepResult(
                index,
                step.get("id"),
                step.get("name") or step.get("uses") or f"step {index}",
                "skipped",
                uses=step.get("uses"),
            )
            if ev.condition(step.get("if")):
                if "uses" in step:
                    self._uses(step, result, ev)
                else:
                    self._run(step, result, ev, carried_env, index)
                if result.outcome == "failure" and not _truthy(
                    step.get("continue-on-error", False)
                ):
                    state["failed"] = True
            if result.id:
                conclusion = (
                    "success"
                    if result.outcome == "failure" and step.get("continue-on-error")
                    else result.outcome
                )
                steps_ctx[result.id] = {
                    "outputs": result.outputs,
                    "outcome": result.outcome,
                    "conclusion": conclusion,
                }
            results.append(result)
        outputs = {
            name: ev.render(spec.get("value", ""))
            for name, spec in (self.action.get("outputs") or {}).items()
        }
        return ActionRun(results, outputs, state["failed"])

    def _uses(self, step: dict[str, Any], result: StepResult, ev: Evaluator) -> None:
        result.with_ = {k: ev.render(v) for k, v in (step.get("with") or {}).items()}
        stand_in = self.uses.get(str(step["uses"]).split("@", 1)[0])
        try:
            result.outputs = dict((stand_in(result.with_) if stand_in else None) or {})
            result.outcome = "success"
        except Exception as exc:  # the stand-in says the action failed
            result.stderr = f"{type(exc).__name__}: {exc}"
            result.outcome = "failure"

    def _run(
        self,
        step: dict[str, Any],
        result: StepResult,
        ev: Evaluator,
        carried_env: dict[str, str],
        index: int,
    ) -> None:
        if step.get("shell") != "bash":
            raise ValueError(
                f"step {result.name!r}: composite run steps need `shell:`; the double runs bash only"
            )
        files = self.temp / "_runner" / f"step{index}"
        files.mkdir(parents=True, exist_ok=True)
        script = files / "script.sh"
        script.write_text(ev.render(step["run"]), encoding="utf-8")
        output, summary, env_file = files / "output", files / "summary.md", files / "env"
        for f in (output, summary, env_file):
            f.write_text("", encoding="utf-8")
        result.env = {k: ev.render(v) for k, v in (step.get("env") or {}).items()}
        env = {
            **self.env,
            **carried_env,
            **result.env,
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_ENV": str(env_file),
            "GITHUB_ACTION_PATH": str(self.action_dir),
            "GITHUB_WORKSPACE": str(self.workspace),
            "RUNNER_TEMP": str(self.temp),
        }
        cwd = self.workspace / ev.render(step.get("working-directory") or ".")
        started = time.perf_counter()
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        result.seconds = time.perf_counter() - started
        result.returncode = proc.returncode
        result.stdout, result.stderr = proc.stdout, proc.stderr
        result.outputs = parse_output_file(output.read_text(encoding="utf-8"))
        result.summary = summary.read_text(encoding="utf-8")
        carried_env.update(parse_output_file(env_file.read_text(encoding="utf-8")))
        result.outcome = "success" if proc.returncode == 0 else "failure"


__all__ = [
    "ActionRun",
    "CompositeRunner",
    "Evaluator",
    "ExpressionError",
    "StepResult",
    "parse_output_file",
    "to_string",
]

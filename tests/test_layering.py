"""The layers import one way, nothing imports in a circle, and the product leaves the test
doubles alone.

Read from the source (the AST), not by importing it: every `import` counts, at module
level, inside a function or under TYPE_CHECKING alike. `from pkg import name` is an import
of the module `pkg.name` when there is one (as Python does it), else of `pkg`.

A new module fails here until it has a layer: add its name (or a prefix, `pkg.*`) to
LAYERS below, in the layer of what it does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("invoiceflow", "flows", "tasks")
TEST_DOUBLES = ("stripe_sandbox", "invoiceflow_testing")
# The product modules that may load a test double, and only from inside a function.
LOADS_TEST_DOUBLES = {"invoiceflow.demo", "invoiceflow.sandbox_command"}

# Top layer first: a module may import its own layer and the layers below it, never one
# above. A name matches that module; `pkg.*` matches pkg and everything under it; `*` is
# any one name. The most exact match wins (`invoiceflow.*.cli` over `invoiceflow.batch.*`).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "cli/service",
        (
            "invoiceflow.__main__",
            "invoiceflow.cli",
            "invoiceflow.cli_common",
            "invoiceflow.sandbox_command",
            "invoiceflow.resolve_cli",
            "invoiceflow.*.cli",
            "invoiceflow.*.__main__",
            "invoiceflow.demo",
            "invoiceflow.interrupt",  # the CLI's Ctrl-C guard
            "invoiceflow.service.*",
            "invoiceflow.webhooks.app",
            "invoiceflow.settings_doc",  # `python -m` writes docs/configuration.md
        ),
    ),
    ("flows", ("flows.*",)),
    ("tasks", ("tasks.*",)),
    (
        "domain",
        (
            "invoiceflow.invoicing.*",
            "invoiceflow.customers",
            "invoiceflow.catalog",
            "invoiceflow.pipeline",
            "invoiceflow.outcomes",
            "invoiceflow.awaiting",
            "invoiceflow.story",
            "invoiceflow.endings",  # a request's story's end, told in the Prefect UI
            "invoiceflow.run_tags",
            "invoiceflow.batch.*",
            "invoiceflow.approval.*",
            "invoiceflow.amend.*",  # amend a sent invoice by Stripe revision
            "invoiceflow.dunning.*",
            "invoiceflow.reconcile.*",
            "invoiceflow.webhooks.*",
        ),
    ),
    (
        "Stripe/Prefect/database I/O and the ledger",
        (
            "invoiceflow.stripe_api",
            "invoiceflow.stripe_clock",
            "invoiceflow.stripe_keys",
            "invoiceflow.stripe_paging",
            "invoiceflow.stripe_write",
            "invoiceflow.invoice_facts",
            "invoiceflow.settlement",  # what Stripe's invoice status means for a request
            "invoiceflow.webhooks.signature",
            "invoiceflow.fresh",
            "invoiceflow.attempt",  # one step's attempt: lease, ids made here, intents
            "invoiceflow.retry",
            "invoiceflow.runtime",
            "invoiceflow.ratelimit.*",
            "invoiceflow.ledger",
            "invoiceflow.write_intents",
            "invoiceflow.lease",
            "invoiceflow.status",
            "invoiceflow.db.*",
            "invoiceflow.stale_runs",
            "invoiceflow.prefect_env",
            "invoiceflow.prefect_reach",
        ),
    ),
    (
        "request/money/settings",
        (
            "invoiceflow",  # the package itself (imports nothing)
            "invoiceflow.request",
            "invoiceflow.request_input",
            "invoiceflow.money",
            "invoiceflow.settings",
            "invoiceflow.cron",
            "invoiceflow.paths",
            "invoiceflow.progress",
            "invoiceflow.http_body",
            "invoiceflow.stripe_limits",  # Stripe's published limits: facts, no I/O
        ),
    ),
)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool

    def where(self) -> str:
        return f"{self.source} imports {self.target} (line {self.line})"


def modules(packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


ALL = modules(PRODUCT + TEST_DOUBLES)


def _known(name: str) -> str | None:
    """The module `name` names, or the package it is an attribute of; None outside ours."""
    while name and name not in ALL:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> Iterator[Import]:
    path = ALL[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*up, base] if base else up)
                names = [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                target = _known(name)
                if target is not None and target != module:
                    yield Import(module, target, child.lineno, in_function)
            yield from walk(child, inner)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")), False)


# One edge per import statement and target (`from x import a, b` is one).
GRAPH = {module: list(dict.fromkeys(imports_of(module))) for module in ALL}


def _matches(pattern: str, module: str) -> tuple[bool, int] | None:
    """(exact length, literal names) when `pattern` matches `module`, else None."""
    want, have = pattern.split("."), module.split(".")
    below = want[-1] == "*" and len(want) > 1 and "*" not in want[:-1]
    if below:
        want = want[:-1]
        if have[: len(want)] != want:
            return None
        return (len(have) == len(want), len(want))
    if len(want) != len(have) or any(w not in ("*", h) for w, h in zip(want, have, strict=True)):
        return None
    return (True, sum(w != "*" for w in want))


def layers_of(module: str) -> set[int]:
    """The layer `module` is in: one, or none (unknown), or two (ambiguous patterns)."""
    ranked = sorted(
        (score, index)
        for index, (_name, patterns) in enumerate(LAYERS)
        for pattern in patterns
        if (score := _matches(pattern, module)) is not None
    )
    return {index for score, index in ranked if score == ranked[-1][0]}


def layer_of(module: str) -> int:
    (layer,) = layers_of(module)  # test_every_product_module_has_one_layer says which
    return layer


PRODUCT_MODULES = [module for module in ALL if module.split(".")[0] in PRODUCT]


def test_every_product_module_has_one_layer() -> None:
    names = ", ".join(repr(name) for name, _ in LAYERS)
    unknown = [module for module in PRODUCT_MODULES if not layers_of(module)]
    assert unknown == [], (
        f"{', '.join(unknown)}: in no layer; add each to LAYERS in tests/test_layering.py, "
        f"in the layer of what it does ({names}: top first, each imports only its own "
        "layer and those below)"
    )
    ambiguous = [module for module in PRODUCT_MODULES if len(layers_of(module)) > 1]
    assert ambiguous == [], "two layers match these equally: give each an exact name"


def test_layers_import_downwards_only() -> None:
    placed = {module for module in PRODUCT_MODULES if len(layers_of(module)) == 1}
    upwards = [
        f"{one.where()}: {LAYERS[layer_of(one.source)][0]} may not import "
        f"{LAYERS[layer_of(one.target)][0]}"
        for module in placed
        for one in GRAPH[module]
        if one.target in placed and layer_of(one.target) < layer_of(one.source)
    ]
    assert not upwards, "\n".join(sorted(upwards))


def test_the_product_loads_test_doubles_only_in_the_demo_and_the_sandbox_command() -> None:
    found = [
        one
        for edges in GRAPH.values()
        for one in edges
        if one.source.split(".")[0] in PRODUCT and one.target.split(".")[0] in TEST_DOUBLES
    ]
    assert [one.where() for one in found if one.source not in LOADS_TEST_DOUBLES] == []
    assert [one.where() for one in found if not one.in_function] == [], "load it when used"
    assert {one.source for one in found} == LOADS_TEST_DOUBLES, "an allowance no one uses"


def test_no_import_cycles() -> None:
    """Among the product and the test doubles, inside functions too."""
    cycles: list[str] = []
    state: dict[str, str] = {}  # "open" while on the path, then "done"
    path: list[Import] = []

    def visit(module: str) -> None:
        state[module] = "open"
        for one in GRAPH[module]:
            if state.get(one.target) == "open":
                start = next(i for i, step in enumerate(path) if step.source == one.target)
                cycles.append(" -> ".join(step.where() for step in [*path[start:], one]))
            elif one.target not in state:
                path.append(one)
                visit(one.target)
                path.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_what_they_check() -> None:
    """Guards the checker: a cycle or an upward import it cannot see passes vacuously."""
    assert _matches("invoiceflow.*.cli", "invoiceflow.batch.cli") == (True, 2)
    assert layer_of("invoiceflow.batch.cli") == 0
    assert LAYERS[layer_of("invoiceflow.invoicing")][0] == "domain"
    assert LAYERS[layer_of("invoiceflow.db.engine")][0].endswith("the ledger")
    edges = {(one.source, one.target, one.in_function) for one in GRAPH["invoiceflow.cli"]}
    assert ("invoiceflow.cli", "flows.invoice", True) in edges  # inside a function
    assert ("invoiceflow.cli", "invoiceflow.cli_common", False) in edges
    assert any(one.target == "invoiceflow.db.writes" for one in GRAPH["invoiceflow.db.migrate"])

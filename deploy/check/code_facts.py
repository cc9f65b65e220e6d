"""What the code says the deployment must agree with, read from the sources (never hard-coded here):
the `STEMSEP_*` environment variables each binary reads (clap `env = "..."` attributes) and their
defaults, the REST routes, the Redis list names, binary names (Cargo.toml), the Dockerfiles and the
model exporter's flags.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# `#[arg(long, env = "STEMSEP_X", default_value = "v")]` or `default_value_t = 3`, possibly split
# over lines; the attribute ends at the first `)]`.
_ARG_ATTR = re.compile(r"#\[(?:arg|clap)\((?P<body>.*?)\)\]", re.S)
_ENV = re.compile(r'env\s*=\s*"(?P<name>[A-Z][A-Z0-9_]*)"')
_DEFAULT = re.compile(r'default_value(?:_t)?\s*=\s*(?:"(?P<s>[^"]*)"|(?P<v>[^,)\s]+))')
# Any other mention of a STEMSEP_ variable read directly (std::env::var("STEMSEP_...")).
_ENV_VAR = re.compile(r'env::var(?:_os)?\(\s*"(?P<name>STEMSEP_[A-Z0-9_]+)"')
_ROUTE_LITERAL = re.compile(r'"(?P<path>/[A-Za-z0-9_./{}:-]*)"')


@dataclass
class EnvVar:
    """One environment variable a binary reads: its default as written in the code, if any."""

    name: str
    default: str | None
    source: str


@dataclass
class Component:
    """One deployable binary: `rest` or `worker`."""

    name: str
    crate_dir: Path
    package: str
    binaries: list[str]
    env: dict[str, EnvVar] = field(default_factory=dict)
    # Path literals in the sources (route candidates); only meaningful for rest.
    paths: set[str] = field(default_factory=set)

    @property
    def binary(self) -> str:
        """The binary the image runs: the package's own (`src/main.rs`) binary."""
        return self.package


@dataclass
class CodeFacts:
    """Everything the manifests are checked against."""

    root: Path
    common_env: dict[str, EnvVar]
    components: dict[str, Component]
    queue_lists: set[str]
    export_flags: set[str]

    def allowed_env(self, component: str) -> dict[str, EnvVar]:
        """The variables a component's container may set: the shared ones plus its own."""
        return {**self.common_env, **self.components[component].env}

    def own_env_known(self, component: str) -> bool:
        """False while the component's code defines no variable of its own yet (not written)."""
        return bool(self.components[component].env)


def _rust_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*.rs") if "target" not in p.parts)


def env_vars(src_dir: Path, root: Path) -> dict[str, EnvVar]:
    """Every `STEMSEP_*`-style variable read under `src_dir`, with its default."""
    found: dict[str, EnvVar] = {}
    for path in _rust_files(src_dir):
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = str(path.relative_to(root))
        for attr in _ARG_ATTR.finditer(text):
            body = attr.group("body")
            env = _ENV.search(body)
            if not env:
                continue
            d = _DEFAULT.search(body)
            default = None if not d else (d.group("s") if d.group("s") is not None else d.group("v"))
            found[env.group("name")] = EnvVar(env.group("name"), default, rel)
        for m in _ENV_VAR.finditer(text):
            found.setdefault(m.group("name"), EnvVar(m.group("name"), None, rel))
    return found


def path_literals(src_dir: Path) -> set[str]:
    """String literals that look like URL paths (`"/healthz"`, `"/apiv1"`): route candidates."""
    out: set[str] = set()
    for path in _rust_files(src_dir):
        out.update(m.group("path") for m in _ROUTE_LITERAL.finditer(path.read_text(errors="replace")))
    return out


def cargo_names(crate_dir: Path) -> tuple[str, list[str]]:
    """The package name and its binaries' names from a crate's Cargo.toml."""
    text = (crate_dir / "Cargo.toml").read_text()
    package = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.S | re.M).group(1)
    bins = re.findall(r'^\[\[bin\]\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.S | re.M)
    if (crate_dir / "src" / "main.rs").exists():
        bins.insert(0, package)
    bins += [p.stem for p in sorted((crate_dir / "src" / "bin").glob("*.rs"))]
    return package, bins


def queue_lists(common_src: Path) -> set[str]:
    """Redis list names the queue code builds as `format!("{}name", prefix)`."""
    text = (common_src / "queue.rs").read_text()
    return set(re.findall(r'format!\("\{\}([A-Za-z_:-]+)"', text))


def export_flags(model_dir: Path) -> set[str]:
    """Long options model/export.py accepts."""
    path = model_dir / "export.py"
    if not path.exists():
        return set()
    return set(re.findall(r'add_argument\([^)]*?"(--[a-z0-9-]+)"', path.read_text()))


def load(root: Path) -> CodeFacts:
    """Reads the facts from the checkout at `root`."""
    components = {}
    for name in ("rest", "worker"):
        crate = root / name
        package, bins = cargo_names(crate)
        components[name] = Component(
            name=name,
            crate_dir=crate,
            package=package,
            binaries=bins,
            env=env_vars(crate / "src", root),
            paths=path_literals(crate / "src"),
        )
    return CodeFacts(
        root=root,
        common_env=env_vars(root / "common" / "src", root),
        components=components,
        queue_lists=queue_lists(root / "common" / "src"),
        export_flags=export_flags(root / "model"),
    )

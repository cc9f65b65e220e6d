"""Tests of the deploy checker itself: the real overlays pass, with either renderer, and every
deliberately broken manifest under fixtures/ (and broken Dockerfiles) makes it fail for the reason
the fixture's `expect` file names."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import code_facts
import deploy_check
import render

FIXTURES = sorted(p for p in (Path(__file__).parent / "fixtures").iterdir() if p.is_dir())


def test_overlays_pass(capsys):
    assert deploy_check.main([]) == 0, capsys.readouterr().out


def test_overlays_pass_without_kubectl(monkeypatch, capsys):
    monkeypatch.setattr(render, "kubectl_available", lambda: False)
    assert deploy_check.main([]) == 0, capsys.readouterr().out
    assert "python subset renderer" in capsys.readouterr().out


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_broken_fixture_fails(fixture, capsys):
    rc = deploy_check.main([str(fixture)])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "[ok] Dockerfiles" in out, out
    for expected in (fixture / "expect").read_text().splitlines():
        assert expected in out, out
    # The breakage is the fixture's, not a renderer mismatch.
    assert "disagrees with kubectl" not in out, out


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("rest", 'ENTRYPOINT ["/usr/local/bin/stemsep-rest"]', 'ENTRYPOINT ["/usr/local/bin/rest"]'),
         "ENTRYPOINT does not run stemsep-rest"),
        (("rest", "USER 10001:10001", "USER root"), "non-root USER"),
        (("worker", "-p stemsep-worker", "-p stemsep-rest"), "no `cargo build --release -p stemsep-worker`"),
        (("worker", '--output "/models/', '--out-file "/models/'), "model/export.py has no option --out-file"),
        (("rest", "EXPOSE 5000", "EXPOSE 8080"), "does not include the bind port"),
    ],
)
def test_broken_dockerfile_fails(tmp_path, edit, expected):
    comp, old, new = edit
    for f in deploy_check.DOCKER.glob("*.Dockerfile"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / f"{comp}.Dockerfile"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    rep = deploy_check.Report("Dockerfiles")
    deploy_check.check_dockerfiles(code_facts.load(deploy_check.ROOT), rep, tmp_path)
    assert any(expected in p for p in rep.problems), rep.problems


def test_code_facts_read_the_shared_config():
    facts = code_facts.load(deploy_check.ROOT)
    assert facts.common_env["STEMSEP_REDIS_URL"].default.startswith("redis://")
    assert {"toWorker", "processing"} <= facts.queue_lists
    assert facts.components["rest"].binary == "stemsep-rest"
    assert facts.components["worker"].binary == "stemsep-worker"


def test_hpa_fallback_variant_swaps_the_autoscaler():
    overlay = deploy_check.K8S / "overlays" / "gke"
    rep = deploy_check.Report("variant")
    objs = deploy_check.render_target(overlay, "hpa-fallback", rep)
    kinds = {o["kind"] for o in objs}
    assert "HorizontalPodAutoscaler" in kinds and "ScaledObject" not in kinds, kinds
    assert not rep.problems, rep.problems
    assert not list(overlay.parent.glob(".check-*")), "the temporary variant copy was left behind"


REST_SOURCES = {
    "Cargo.toml": '[package]\nname = "stemsep-rest"\nversion = "0.1.0"\n',
    "src/main.rs": "fn main() {}\n",
    "src/config.rs": (
        "#[derive(clap::Parser)]\npub struct RestArgs {\n"
        '    /// Listen address.\n    #[arg(long, env = "STEMSEP_BIND",\n'
        '          default_value = "0.0.0.0:5000")]\n    pub bind: String,\n'
        '    /// Longest song, s.\n    #[arg(long, env = "STEMSEP_MAX_SECONDS", default_value_t = 1200)]\n'
        "    pub max_seconds: u64,\n"
        '    /// Keys.\n    #[arg(long, env = "STEMSEP_AUTH", default_value = "off")]\n    pub auth: String,\n'
        '    #[arg(long, env = "STEMSEP_API_KEYS", default_value = "")]\n    pub api_keys: String,\n'
        '    #[arg(long, env = "STEMSEP_REMOVE_BY_GET", default_value_t = true)]\n    pub rbg: bool,\n'
        '    #[arg(long, env = "STEMSEP_MAX_UPLOADS", default_value_t = 4)]\n    pub up: u64,\n}\n'
    ),
    "src/startup.rs": (
        'App::new().route("/", web::get().to(index)).route("/healthz", web::get().to(healthz))\n'
        '    .service(web::scope("/apiv1").route("/queue", web::get().to(queue)));\n'
    ),
}


def _facts_with_rest(tmp_path: Path) -> code_facts.CodeFacts:
    """The real common/ and worker/ with a REST crate shaped like the one being written, so the
    strict route and bind-port checks are exercised before rest/src exists."""
    root = deploy_check.ROOT
    for d in ("common", "worker"):
        shutil.copytree(root / d, tmp_path / d, ignore=shutil.ignore_patterns("target", "tests", "benches"))
    shutil.copytree(root / "model", tmp_path / "model", ignore=shutil.ignore_patterns("*.onnx", "*.f32"))
    for rel, text in REST_SOURCES.items():
        (tmp_path / "rest" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rest" / rel).write_text(text)
    return code_facts.load(tmp_path)


def test_routes_and_bind_port_are_checked_once_rest_code_exists(tmp_path):
    facts = _facts_with_rest(tmp_path)
    assert facts.components["rest"].env["STEMSEP_BIND"].default == "0.0.0.0:5000"
    assert {"/", "/healthz"} <= facts.components["rest"].paths
    objs, _ = render.render(deploy_check.K8S / "overlays" / "local")
    rep = deploy_check.Report("local")
    deploy_check.check_agreement(objs, facts, rep)
    assert not rep.problems and not rep.pending, (rep.problems, rep.pending)

    objs, _ = render.render(Path(__file__).parent / "fixtures" / "wrong-probe-path")
    rep = deploy_check.Report("wrong-probe-path")
    deploy_check.check_agreement(objs, facts, rep)
    assert any("readinessProbe path /health is not a route" in p for p in rep.problems), rep.problems

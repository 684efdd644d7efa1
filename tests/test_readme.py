"""The README's Python example runs and does what its comments say."""

import pathlib
import re

import torch

import ssm
from config_helpers import compose_config

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_layer_example_runs_and_step_matches_forward():
    example, _ = readme_python_blocks()
    scope: dict = {}
    exec(compile(example, str(README), "exec"), scope)
    y, y0, k = scope["y"], scope["y0"], scope["k"]
    assert y.shape == (8, 1000, 64) and k.shape == (64, 1000) and y0.shape == (8, 64)
    torch.testing.assert_close(y0, y[:, 0], rtol=1e-4, atol=1e-4)
    assert scope["y_s5"].shape == (8, 1000, 64)
    assert scope["y_c"].shape == (8, 1000, 64) and scope["forecast"].shape == (8, 96, 64)
    Lam, V, Vinv = scope["Lam"], scope["V"], scope["Vinv"]
    A = ssm.hippo.transition("legs", 16)[0].to(torch.complex128)
    lm, x, h_t = scope["lm"], scope["x"], scope["h_t"]
    with torch.no_grad():
        torch.testing.assert_close(h_t, lm(x[:, :16])[:, 15], rtol=1e-4, atol=1e-4)
    assert torch.linalg.cond(V) < 10 and torch.linalg.matrix_norm(V @ torch.diag(Lam) @ Vinv - A, 2) < 0.1 * 163


def test_readme_own_layer_example_steps_like_forward_and_carries_its_hints():
    _, example = readme_python_blocks()
    scope: dict = {}
    exec(compile(example, str(README), "exec"), scope)
    net, u, y_t = scope["net"], scope["u"], scope["y_t"]
    with torch.no_grad():
        torch.testing.assert_close(y_t, net(u)[:, -1], rtol=1e-5, atol=1e-5)
    layer = net.blocks[0].layer
    (group,) = [g for g in scope["groups"] if any(p is layer.w for p in g["params"])]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.0
    import copy

    assert ssm.optim.get_hint(copy.deepcopy(layer), "w")["lr"] == 1e-3


def test_readme_own_layer_config_composes_and_builds_with_the_documented_command(tmp_path, monkeypatch):
    """The README's model yaml, in a config folder of one's own, composed with the README's
    hydra.searchpath command over the LRA experiment; the layer takes the experiment's S4D keys."""
    import hydra

    text = README.read_text()
    (yaml,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    (folder,) = re.findall(r"`(my_configs)/model/ema.yaml`", text)
    (model_dir := tmp_path / folder / "model").mkdir(parents=True)
    (model_dir / "ema.yaml").write_text(yaml)
    _, example = readme_python_blocks()
    (tmp_path / "my_layers.py").write_text(example)
    monkeypatch.syspath_prepend(str(tmp_path))
    (command,) = [c for c in readme_train_commands() if any(a.startswith("hydra.searchpath=") for a in c)]
    overrides = [f"hydra.searchpath=[file://{tmp_path / folder}]" if a.startswith("hydra.searchpath=") else a
                 for a in command]
    from ssm.training.config_checks import check_config

    cfg = compose_config(*overrides)
    check_config(cfg)
    model = hydra.utils.instantiate(cfg.model, d_output=10, n_tokens=18)
    assert type(model.backbone.blocks[0].layer).__name__ == "EMALayer"


def test_readme_names_the_main_commands():
    text = README.read_text()
    assert "python train.py experiment=lra" in text
    assert 'pip install -e ".[dev]"' in text and "python -m pytest" in text


def test_ci_runs_the_readme_install_and_test_command():
    readme, ci = README.read_text(), (README.parent / ".ci" / "run").read_text()
    (test_command,) = re.findall(r"^python -m pytest.*$", readme, flags=re.M)
    assert test_command in ci.splitlines()
    for line in ("pip install torch==2.13.0", 'pip install -e ".[dev]"'):
        assert line in readme and line in ci.splitlines()


def readme_train_commands() -> list[list[str]]:
    """Every `python train.py ...` command in the README, continuation lines joined; in a
    multirun (`-m`) command each comma-separated sweep keeps its first value."""
    text = README.read_text().replace("\\\n", " ")
    commands = re.findall(r"python train\.py ([^\n`|]*)", text)
    out = []
    for cmd in commands:
        words = cmd.split()
        args = [arg.strip("'\"") for arg in words if "=" in arg and "<" not in arg]
        if "-m" in words:
            args = [arg.split(",")[0] for arg in args]
        out.append(args)
    return out


def test_every_readme_train_command_composes_and_passes_the_config_checks():
    from ssm.training.config_checks import check_config

    commands = readme_train_commands()
    assert len(commands) >= 8
    for overrides in commands:
        if any(arg.startswith("hydra.searchpath=") for arg in overrides):
            continue  # a config folder of the reader's own: test_readme_own_layer_config_composes_...
        cfg = compose_config(*overrides)
        assert cfg.model and cfg.data
        check_config(cfg)


def readme_bench_commands() -> list[tuple[str, list[str]]]:
    """Every `python -m bench[.study] ...` command in the README: (module, its words)."""
    found = re.findall(r"python -m (bench(?:\.\w+)?)((?: +[^ #\n`]+)*)", README.read_text())
    return [(module, words.split()) for module, words in found]


def test_every_readme_bench_command_names_a_module_and_flags_it_has():
    from bench.cases import CASES

    commands = readme_bench_commands()
    assert len(commands) >= 10
    root = README.parent
    for module, words in commands:
        path = root / (module.replace(".", "/") + ".py")
        path = path if path.exists() else root / module.replace(".", "/") / "__main__.py"
        assert path.exists(), f"README runs {module}, which does not exist"
        source = path.read_text()
        for flag in (w for w in words if w.startswith("--")):
            assert f'"{flag}"' in source, f"README passes {flag} to {module}, which has no such option"
        if "--op" in words:
            op = words[words.index("--op") + 1]
            assert op in CASES, f"README benchmarks --op {op}; the ops are {sorted(CASES)}"


ARCHITECTURE = README.parent / "ARCHITECTURE.md"


def test_every_repository_path_the_docs_name_exists():
    """Paths under the packages, configs, benchmarks, tests and CI named in code blocks or
    backticks in the README and ARCHITECTURE.md exist (`{a,b}` expanded, `<placeholder>` and
    `*` as globs)."""
    missing = []
    for doc in (README, ARCHITECTURE):
        parts = re.split(r"```[^\n]*\n(.*?)```", doc.read_text(), flags=re.S)  # odd parts: code blocks
        spans = [span for i, part in enumerate(parts) for span in ([part] if i % 2 else re.findall(r"`([^`]+)`", part))]
        assert len(spans) > 50
        for span in spans:
            for path in re.findall(r"(?<![\w/.])(?:ssm|kernels|configs|bench|tests|\.ci)/[\w./{},<>*-]*", span):
                path = path.rstrip(".,")
                braces = re.search(r"\{([^}]*)\}", path)
                paths = ([path[:braces.start()] + part + path[braces.end():] for part in braces.group(1).split(",")]
                         if braces else [path])
                for candidate in paths:
                    pattern = re.sub(r"<[^>]*>", "*", candidate)
                    if not any(list(README.parent.glob(p)) for p in (pattern, pattern + ".py", pattern + ".yaml")):
                        missing.append(f"{doc.name}: {candidate}")
    assert not missing, missing


def test_dotted_names_in_the_readme_resolve_after_import_ssm_and_kernels():
    """`ssm.<module>.<name>(...)` and `kernels.<name>` as the README writes them work in a fresh
    interpreter after `import ssm, kernels`; the training stack and the mamba_ssm compatibility
    module are imported by name (`from ssm.training import ...`, `import kernels.mamba_ssm_compat`)."""
    import subprocess
    import sys

    names = sorted(set(re.findall(r"\b(?:ssm|kernels)(?:\.[A-Za-z_]\w*)+", README.read_text())))
    names = [n for n in names if not n.startswith(("ssm.training", "kernels.mamba_ssm_compat"))]
    assert "ssm.prefill.prefill" in names and "kernels.use_backend" in names
    script = "import functools, ssm, kernels\n" + "".join(
        f"functools.reduce(getattr, {n.split('.')[1:]!r}, {n.split('.')[0]})\n" for n in names)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=README.parent)
    assert result.returncode == 0, result.stderr[-2000:]


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(title)
    end = text.find("\n#", start + len(title))
    return text[start:end if end != -1 else None]


def test_readme_scale_out_and_short_run_overrides_compose_and_pass_the_config_checks():
    """The override column of the README's several-GPUs table, and the short trial run's
    overrides, each on top of experiment=lra."""
    from ssm.training.config_checks import check_config

    table = readme_section("### Several GPUs, nodes, SLURM")
    rows = re.findall(r"^\| [^|]+ \| `([^`]+)`", table, flags=re.M)
    assert len(rows) >= 5 and "trainer=fsdp" in rows
    (short_run,) = re.findall(r"A short run, to try a setup[^`]*`([^`]+)`", README.read_text())
    for overrides in rows + [short_run]:
        cfg = compose_config("experiment=lra", *overrides.split())
        check_config(cfg)

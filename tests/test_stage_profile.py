"""benchmarks/stage_profile.py: the stack rules that sort py-spy samples into categories, the reading of py-spy's
speedscope file, and the expansion of dvc.yaml into stage commands — on synthetic input, without py-spy."""
import importlib.util
import json
import subprocess

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("stage_profile", ROOT / "benchmarks" / "stage_profile.py")
sp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sp)

CLI = [("<module>", "/venv/bin/genlab"), ("main", "/repo/src/genlab/cli.py"), ("run_stage", "/repo/src/genlab/cli.py")]
STAGE = CLI + [("task", "/repo/src/genlab/cli.py"), ("run", "/repo/src/genlab/stages/classifier.py")]
FIT = STAGE + [("fit", "/repo/src/genlab/runner.py"), ("Trainer.fit", "lightning/pytorch/trainer/trainer.py"),
               ("_FitLoop.run", "lightning/pytorch/loops/fit_loop.py")]
WORKER = [("<module>", "<string>"), ("spawn_main", "multiprocessing/spawn.py"),
          ("_process_worker", "concurrent/futures/process.py")]
IMPORT = [("_find_and_load", "<frozen importlib._bootstrap>"), ("<module>", "torch/__init__.py")]


@pytest.mark.parametrize("stack, category", [
    (CLI + IMPORT, "startup"),                                                       # imports before the stage
    (CLI + [("compose", "/repo/src/genlab/cli.py"), ("Hydra.compose_config", "hydra/_internal/hydra.py")],
     "startup"),                                                                     # Hydra composition
    (STAGE + [("import_module", "importlib/__init__.py")] + IMPORT, "startup"),      # a lazy import in the stage
    (WORKER + IMPORT, "startup"),                                                    # a worker unpickling its job
    (FIT + [("training_step", "/repo/src/genlab/models/classifier.py"),
             ("Module._call_impl", "torch/nn/modules/module.py")], "training"),
    (FIT + [("Tensor.backward", "torch/_tensor.py")], "training"),
    (FIT + [("Adam.step", "torch/optim/adam.py")], "training"),
    (FIT + [("_EvaluationLoop.run", "lightning/pytorch/loops/evaluation_loop.py"),
            ("validation_step", "/repo/src/genlab/models/classifier.py")], "evaluation"),
    (FIT + [("validation_step", "/repo/src/genlab/models/flow.py"), ("sample", "/repo/src/genlab/evaluate/ode.py"),
            ("solve", "/repo/src/genlab/evaluate/ode.py")], "sampling"),              # innermost rule wins
    (FIT + [("training_step", "/repo/src/genlab/models/cnf.py"), ("solve", "/repo/src/genlab/evaluate/ode.py")],
     "training"),                                                                    # ODE solver: its caller's
    (FIT + [("ModelCheckpoint.on_train_batch_end", "lightning/pytorch/callbacks/model_checkpoint.py"),
            ("Trainer.save_checkpoint", "lightning/pytorch/trainer/trainer.py"), ("save", "torch/serialization.py")],
     "checkpointing"),
    (FIT + [("training_step", "/repo/src/genlab/models/gpt.py"),
             ("LightningModule.log", "lightning/pytorch/core/module.py")], "logging"),
    (FIT + [("CSVLogger.log_metrics", "lightning/pytorch/loggers/csv_logs.py")], "logging"),
    (STAGE + [("generate", "/repo/src/genlab/nn/transformer.py")], "sampling"),
    (STAGE + [("bootstrap_ci", "/repo/src/genlab/evaluate/stats.py")], "evaluation"),
    (STAGE + [("fid_score", "/repo/src/genlab/stages/diffusion.py")], "evaluation"),
    (STAGE + [("savefig", "matplotlib/figure.py")], "other"),                        # figures, metrics files
    (WORKER + [("_run_job_bytes", "/repo/src/genlab/parallel.py"), ("train_one", "/repo/src/genlab/recipes/x.py")],
     "training"),
    (CLI + [("outputs_together", "/repo/src/genlab/io.py")], "startup"),             # outside the stage's run
])
def test_classify(stack, category):
    assert sp.classify(stack) == category


def test_read_speedscope_sums_seconds_per_process_and_leaves_out_the_process_frame(tmp_path):
    frames = [{"name": n, "file": f} for n, f in
              [('process 7:"genlab gpt"', ""), *STAGE, ("Tensor.backward", "torch/_tensor.py"), *IMPORT]]
    idx = {(f["name"], f["file"]): i for i, f in enumerate(frames)}
    train = [0] + [idx[f] for f in STAGE] + [idx[("Tensor.backward", "torch/_tensor.py")]]
    start = [0] + [idx[f] for f in CLI + IMPORT]
    doc = {"shared": {"frames": frames}, "profiles": [
        {"name": 'Process 7 Thread 7 "MainThread"', "samples": [train, train, start], "weights": [0.02, 0.02, 0.02]},
        {"name": 'Process 9 Thread 9 ""', "samples": [start], "weights": [0.02]}]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    seconds = sp.read_speedscope(path)
    assert seconds[7]["training"] == pytest.approx(0.04) and seconds[7]["startup"] == pytest.approx(0.02)
    assert seconds[9]["startup"] == pytest.approx(0.02) and sum(seconds[9].values()) == pytest.approx(0.02)
    assert sp.main_pid(path) == 7


def test_stage_commands_expand_vars_and_foreach_and_select(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "vars:\n  - run: genlab\n  - cfg: --config-dir . --config-name params\n"
        "stages:\n  a:\n    cmd: ${run} a ${cfg}\n"
        "  e:\n    foreach: ${model.e.widths}\n    do:\n      cmd: ${run} e ${cfg} model.e.only=${item}\n")
    (tmp_path / "params.yaml").write_text("model:\n  e:\n    widths: [8, 16]\n")
    commands = sp.stage_commands(tmp_path)
    assert commands == [("a", "genlab a --config-dir . --config-name params"),
                        ("e@8", "genlab e --config-dir . --config-name params model.e.only=8"),
                        ("e@16", "genlab e --config-dir . --config-name params model.e.only=16")]
    assert [n for n, _ in sp.select(commands, ["e"])] == ["e@8", "e@16"]
    assert [n for n, _ in sp.select(commands, ["e@16", "a"])] == ["a", "e@16"]    # dvc.yaml order
    with pytest.raises(SystemExit):
        sp.select(commands, ["a", "bogus"])


def test_refuses_a_working_copy_with_uncommitted_changes(tmp_path, capsys):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    with pytest.raises(SystemExit) as exit_:
        sp.main(["--repo", str(tmp_path)])
    assert exit_.value.code == 2 and "uncommitted changes" in capsys.readouterr().err


@pytest.mark.parametrize("stack, category", [
    (STAGE + [("decorate_context", "torch/utils/_contextlib.py"), ("split_loss", "/repo/src/genlab/stages/gpt.py")],
     "evaluation"),                                                                  # a @torch.no_grad() helper
    (STAGE + [("decorate_context", "torch/utils/_contextlib.py"), ("nll", "/repo/src/genlab/stages/cnf.py"),
              ("solve", "/repo/src/genlab/evaluate/ode.py"), ("grad", "torch/autograd/__init__.py")], "evaluation"),
    (STAGE + [("decorate_context", "torch/utils/_contextlib.py"),
              ("sample_ddim", "/repo/src/genlab/models/diffusion.py")], "sampling"),  # the inner rule first
])
def test_classify_no_grad_helpers(stack, category):
    assert sp.classify(stack) == category

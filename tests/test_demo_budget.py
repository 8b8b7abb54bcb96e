"""The demo's report states each model's training budget: what the trainer reported while training,
kept when the prediction step that follows starts a new progress record."""
from nnunet_dino.demo import run as demo_run


def test_the_budget_reported_while_training_survives_the_prediction_step(monkeypatch, tmp_path, capsys):
    def fake_train(dataset_id, name, env, log_path=None, on_line=None):
        for done in (400, 800):
            on_line(f"2026-01-01 00:00:00: nnunet-dino budget: {done}/800 iterations, {done / 2:.1f} s")
        return 401.0

    def fake_predict(dataset_id, name, images, output, env, log_path=None):
        return 7.0

    monkeypatch.setattr(demo_run, "train", fake_train)
    monkeypatch.setattr(demo_run, "predict", fake_predict)
    steps = demo_run.StepPrinter(7)
    run = demo_run.train_and_predict(902, "nnUNetTrainer_demo", str(tmp_path), str(tmp_path), {}, "log", steps)
    assert steps.last is None  # the prediction step reset the printer's record ...
    assert run["budget"] == (800, 800, "iterations", 400.0)  # ... but the run kept the trainer's
    assert run["timings"] == {"train nnUNetTrainer_demo": 401.0, "predict nnUNetTrainer_demo": 7.0}
    statement = demo_run.budget_statement({"nnUNetTrainer_demo": {"budget": run["budget"]},
                                           "nnUNetTrainerUDFA_S_demo": {"budget": run["budget"]}})
    assert "**800 training iterations**" in statement
    assert "`nnUNetTrainer_demo` 400 s (about 0.50 s per iteration)" in statement
    printed = capsys.readouterr().out
    assert "800/800 iterations, 400 s of training, about 0 s left\n[2/7] predicting the test slabs" in printed

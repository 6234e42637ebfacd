"""Every CLI command in-process: outputs, run directories, and one-line errors that lose nothing."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import load_dataset, load_model, model_names, predict_proba
from cnnlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, *fragments):
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "digits-run"
    assert main(["train", "--dataset", "digits", "--model", "seed-mnist", "--epochs", "2", "--seed", "0",
                 "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def test_models_and_datasets_lists(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and all(name in out for name in model_names())
    code, out, _ = run(capsys, "models", "--json")
    assert {m["name"] for m in json.loads(out)} == set(model_names())
    code, out, _ = run(capsys, "datasets")
    assert out.split() == ["digits", "mnist", "fashion-mnist", "cifar10"]


def test_train_writes_a_complete_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "versions.json", "history.csv", "history.json", "model.safetensors", "model.json",
            "best.safetensors", "best.json", "curves.png", "metrics.json"} <= names
    config = json.loads((trained_run / "config.json").read_text())
    assert config["seed"] == 0 and config["epochs"] == 2 and config["input_shape"] == [28, 28, 1]
    history = json.loads((trained_run / "history.json").read_text())["history"]
    assert len(history["loss"]) == 2 and len(history["val_accuracy"]) == 2
    assert len((trained_run / "history.csv").read_text().strip().splitlines()) == 3
    with Image.open(trained_run / "curves.png") as img:
        assert img.size == (1000, 400) and len(np.unique(np.asarray(img.convert("L")))) > 10
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert 0.5 < metrics["test_accuracy"] <= 1.0


def test_evaluate_reproduces_the_runs_test_accuracy(trained_run, capsys):
    code, out, _ = run(capsys, "evaluate", str(trained_run), "--json")
    assert code == 0
    result = json.loads(out)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert result["n"] == 360 and result["dataset"] == "digits"
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    code, out, _ = run(capsys, "evaluate", str(trained_run / "model.safetensors"), "--dataset", "digits")
    assert code == 0 and "accuracy" in out and "360 images" in out


def test_predict_gives_class_names_and_matches_the_model(trained_run, tmp_path, capsys):
    test = load_dataset("digits", split="test")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(test.images[i, 0].numpy()).save(folder / f"{i}.png")
    code, out, _ = run(capsys, "predict", str(trained_run), str(folder), "--top-k", "3", "--json")
    assert code == 0
    predictions = json.loads(out)
    assert [p["path"].rsplit("/", 1)[1] for p in predictions] == [f"{i}.png" for i in range(5)]
    model, card = load_model(trained_run)
    expected = predict_proba(model, test.images[:5])
    for i, p in enumerate(predictions):
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert p["top"][0]["class"] == card.class_names[int(expected[i].argmax())]
        assert probs[0] == pytest.approx(float(expected[i].max()), abs=1e-6)
    code, out, _ = run(capsys, "predict", str(trained_run), str(folder / "0.png"))
    assert code == 0 and out.startswith(str(folder / "0.png") + ": ")


def test_existing_run_directory_is_never_overwritten(trained_run, capsys):
    before = {p.name: p.read_bytes() for p in trained_run.iterdir()}
    code, out, err = run(capsys, "train", "--dataset", "digits", "--run-dir", str(trained_run), "--quiet")
    assert_one_line_error(code, out, err, str(trained_run), "already exists")
    assert {p.name: p.read_bytes() for p in trained_run.iterdir()} == before


def _folder(root, classes, mode="L", size=(28, 28), per_class=3):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            color = 255 if mode == "L" else (255, 0, 0)
            Image.new(mode, size, color).save(root / name / f"{i}.png")
    return root


def test_bad_inputs_get_one_line_and_leave_nothing(tmp_path, capsys, trained_run):
    runs = tmp_path / "runs"
    cases = [
        (["train", "--model", "seed-mnst"], ["unknown model 'seed-mnst'", "seed-mnist"]),
        (["train", "--dataset", "fashion-mnst"], ["unknown dataset", "fashion-mnist"]),
        (["train", "--epochs", "0"], ["--epochs", "positive integer"]),
        (["train", "--batch-size", "-3"], ["--batch-size"]),
        (["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "empty"), "--no-download"],
         ["train-images-idx3-ubyte", str(tmp_path / "empty")]),
        (["train", str(_folder(tmp_path / "one", ["cat"]))], ["at least 2 classes"]),
        (["summary", "vgg17"], ["unknown model 'vgg17'", "vgg16"]),
        (["evaluate", str(tmp_path / "no-such-run")], ["model not found"]),
        (["frobnicate"], ["invalid choice"]),
    ]
    for argv, fragments in cases:
        code, out, err = run(capsys, *argv, *(["--runs-root", str(runs)] if argv[0] == "train" else []))
        assert_one_line_error(code, out, err, *fragments)
    assert not runs.exists()


def test_empty_class_folder_and_corrupt_image_are_named(tmp_path, capsys, trained_run):
    root = _folder(tmp_path / "photos", ["a", "b"])
    (root / "c").mkdir()
    code, out, err = run(capsys, "train", str(root), "--run-dir", str(tmp_path / "r1"), "--quiet")
    assert_one_line_error(code, out, err, str(root / "c"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, err = run(capsys, "predict", str(trained_run), str(bad))
    assert_one_line_error(code, out, err, str(bad))
    assert out == "" and not (tmp_path / "r1").exists()


def test_evaluating_on_data_with_other_channels_is_a_clear_error(tmp_path, capsys, trained_run):
    root = _folder(tmp_path / "rgb", [str(i) for i in range(10)], mode="RGB", per_class=1)
    code, out, err = run(capsys, "evaluate", str(trained_run), "--dataset", str(root), "--split", "train")
    assert_one_line_error(code, out, err, "1 channel", "have 3")


def test_no_test_trains_on_validation_and_leaves_the_test_split_for_evaluate(trained_run, tmp_path, capsys):
    run_dir = tmp_path / "tuning"
    code, out, err = run(capsys, "train", "--dataset", "digits", "--model", "seed-mnist", "--epochs", "2", "--seed",
                         "0", "--no-test", "--run-dir", str(run_dir), "--quiet")
    assert code == 0, err
    assert "val_accuracy" in out and "test loss" not in out and "test accuracy" not in out, out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "val_accuracy" in metrics and not any(key.startswith("test_") for key in metrics), metrics
    # same seed and settings as trained_run: the weights, and so the later test score, are the same
    code, out, _ = run(capsys, "evaluate", str(run_dir), "--json")
    expected = json.loads((trained_run / "metrics.json").read_text())["test_accuracy"]
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx(expected)


def test_tta_on_a_softmax_model_averages_its_probabilities(trained_run, capsys):
    """--tta 1 on a model that ends in softmax: the loss is the cross-entropy of the mean of the two views'
    probabilities (computed by hand here), not a softmax taken again over probabilities."""
    model, card = load_model(trained_run)
    assert card.outputs == "probabilities" and card.test_time_augmentation == {}
    data = load_dataset("digits", split="test")
    with torch.no_grad():
        x = data.images.float() / 255
        probabilities = 0.5 * (model(x) + model(x.flip(3)))
    expected_loss = float(torch.nn.functional.nll_loss(probabilities.clamp(1e-7, 1 - 1e-7).log(), data.labels))
    expected_accuracy = float((probabilities.argmax(1) == data.labels).float().mean())
    code, out, _ = run(capsys, "evaluate", str(trained_run), "--tta", "1", "--json")
    got = json.loads(out)
    assert code == 0 and got["tta"] == 1
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert got["accuracy"] == pytest.approx(expected_accuracy)
    code, out, _ = run(capsys, "evaluate", str(trained_run), "--tta", "1", "--report",
                       str(trained_run.parent / "tta-report"), "--json")
    assert code == 0 and json.loads(out)["loss"] == pytest.approx(expected_loss, rel=1e-4)


def test_config_file_true_false_settings_must_be_booleans(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"evaluate_test": "no"}')
    code, out, err = run(capsys, "train", "--config", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, "evaluate_test must be true or false", "'no'")
    assert not (tmp_path / "run").exists()


def test_config_file_then_flags(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('model = "lenet5"\nepochs = 1\nbatch-size = 64\nvalidation_split = 0.2\n')
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--config", str(cfg), "--batch-size", "128", "--run-dir", str(run_dir),
                         "--quiet", "--seed", "1")
    assert code == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["model"], config["batch_size"], config["validation_split"]) == ("lenet5", 128, 0.2)
    cfg.write_text("epoch = 3\n")
    code, out, err = run(capsys, "train", "--config", str(cfg))
    assert_one_line_error(code, out, err, "unknown setting 'epoch'", "epochs")


def test_debug_shows_the_traceback():
    from cnnlab import CnnlabError

    with pytest.raises(CnnlabError):
        main(["--debug", "summary", "nope"])


def test_image_size_lets_small_images_feed_a_bigger_model(tmp_path, capsys):
    run_dir = tmp_path / "r"
    code, out, err = run(capsys, "train", "--dataset", "digits", "--model", "seed-cifar10", "--image-size", "32", "32",
                         "--epochs", "1", "--run-dir", str(run_dir), "--quiet")
    assert code == 0, err
    assert json.loads((run_dir / "config.json").read_text())["input_shape"] == [32, 32, 1]
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test_loss"])
    assert torch.is_tensor(load_model(run_dir)[0].conv2d.weight)


def test_check_data_reports_and_sets_the_exit_code(tmp_path, capsys):
    good = _folder(tmp_path / "good", ["cat", "dog"])
    (good / "dog" / "broken.png").write_bytes(b"")
    code, out, _ = run(capsys, "check-data", str(good))
    assert code == 0 and "broken.png" in out
    code, out, _ = run(capsys, "check-data", str(good), "--json")
    report = json.loads(out)
    assert code == 0 and report["errors"] == [] and len(report["undecodable"]) == 1
    bad = _folder(tmp_path / "bad", ["only"])
    code, out, _ = run(capsys, "check-data", str(bad))
    assert code == 1 and "1 class folder(s)" in out and "needs at" in out


def test_augment_preview_writes_the_grid(tmp_path, capsys):
    image = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(image)
    out_png = tmp_path / "grid.png"
    code, out, err = run(capsys, "augment-preview", str(image), "--augment", "rotate=20,flip=h", "-n", "4",
                         "-o", str(out_png))
    assert code == 0, err
    with Image.open(out_png) as grid:
        assert grid.width > grid.height and len(np.unique(np.asarray(grid.convert("L")))) > 50
    code, out, err = run(capsys, "augment-preview", str(image), "--augment", "rotat=20")
    assert_one_line_error(code, out, err, "unknown augmentation 'rotat'", "rotate")


def test_train_on_a_folder_with_augmentation_and_class_weights(tmp_path, capsys):
    test = load_dataset("digits", split="train")
    root = tmp_path / "digits"
    for d in range(3):
        (root / str(d)).mkdir(parents=True)
        for i in (test.labels == d).nonzero().flatten()[: 30 if d else 60].tolist():  # class 0 twice as big
            Image.fromarray(test.images[i, 0].numpy()).save(root / str(d) / f"{i}.png")
    (root / "2" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", str(root), "--epochs", "8", "--augment", "digits", "--class-weights",
                         "auto", "--seed", "0", "--run-dir", str(run_dir), "--quiet")
    assert code == 0, err
    assert "skipped 1 undecodable image" in out
    assert (run_dir / "skipped_files.txt").read_text().strip().endswith("corrupt.png")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["augment"] == "digits" and config["class_weights"] == "auto"
    split = json.loads((run_dir / "split.json").read_text())
    assert len(split["test"]) == 12 and len(split["validation"]) == 12  # 10% of 120, per class
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.75, metrics
    code, out, _ = run(capsys, "evaluate", str(run_dir), "--json")
    assert json.loads(out)["n"] == 12 and json.loads(out)["accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_curves_of_one_run_and_a_comparison(trained_run, tmp_path, capsys):
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    code, out, err = run(capsys, "curves", str(trained_run), "-o", str(one))
    assert code == 0, err
    code, out, err = run(capsys, "curves", str(trained_run), str(trained_run), "-o", str(two))
    assert code == 0, err
    for png in (one, two):
        with Image.open(png) as img:
            assert len(np.unique(np.asarray(img.convert("L")))) > 10
    code, out, err = run(capsys, "curves", str(tmp_path))
    assert_one_line_error(code, out, err, "history.json")


def test_evaluate_report_writes_html_and_lists_confusions(trained_run, tmp_path, capsys):
    report = tmp_path / "report"
    code, out, err = run(capsys, "evaluate", str(trained_run), "--report", str(report))
    assert code == 0, err
    assert "most confused" in out and "precision" in out and str(report / "report.html") in out
    html_text = (report / "report.html").read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.4f}" in html_text and "https://" not in html_text
    code, out, err = run(capsys, "evaluate", str(trained_run), "--report", str(report))
    assert_one_line_error(code, out, err, "already exists")


def test_feature_maps_filters_gradcam_and_conv_arithmetic(trained_run, tmp_path, capsys):
    digit = tmp_path / "digit.png"
    Image.fromarray(load_dataset("digits", split="test").images[0, 0].numpy()).save(digit)
    maps = tmp_path / "maps"
    code, out, err = run(capsys, "feature-maps", str(trained_run), str(digit), "--layers", "conv2d,max_pooling2d_1",
                         "-o", str(maps))
    assert code == 0, err
    assert "conv2d: 26x26x32" in out and "max_pooling2d_1: 5x5x64" in out
    assert sorted(p.name for p in maps.iterdir()) == ["conv2d.png", "max_pooling2d_1.png"]
    code, out, err = run(capsys, "feature-maps", str(trained_run), str(digit), "--layers", "conv2", "-o",
                         str(tmp_path / "m2"))
    assert_one_line_error(code, out, err, "conv2")
    code, out, err = run(capsys, "filters", str(trained_run), "-o", str(tmp_path / "f.png"))
    assert code == 0 and "(32, 1, 3, 3)" in out, err
    code, out, err = run(capsys, "gradcam", str(trained_run), str(digit), "--class", "3", "-o", str(tmp_path / "g.png"))
    assert code == 0 and out.startswith("class 3 ") and "layer conv2d_1" in out, err
    for png in (maps / "conv2d.png", tmp_path / "f.png", tmp_path / "g.png"):
        with Image.open(png) as img:
            assert len(np.unique(np.asarray(img.convert("L")))) > 10, png
    code, out, err = run(capsys, "gradcam", str(trained_run), str(digit), "--class", "three")
    assert_one_line_error(code, out, err, "--class 'three'", "Classes: 0, 1")
    code, out, err = run(capsys, "conv-arithmetic")
    assert code == 0 and "convolution at (0,0): 1" in out and "conv2d: True" in out and "MISMATCH" not in out
    code, out, _ = run(capsys, "conv-arithmetic", "--json")
    assert json.loads(out)["feature_map"] == [[1, 1, 3], [0, 2, 0], [0, -2, 0]]


def test_a_run_restored_by_early_stopping_reports_the_restored_epoch(tmp_path, capsys):
    # lr 0.01 makes validation loss wander, so the last of 8 epochs is (all but surely) not the best one
    code, out, _ = run(capsys, "train", "--dataset", "digits", "--model", "seed-mnist", "--epochs", "8",
                       "--early-stopping", "2", "--lr", "0.01", "--seed", "0", "--precision", "fp32",
                       "--run-dir", str(tmp_path / "r"), "--quiet")
    assert code == 0
    history = json.loads((tmp_path / "r" / "history.json").read_text())["history"]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    best = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    assert best < len(history["val_loss"]) - 1
    assert f"stopped at epoch {len(history['loss'])}, restored epoch {best + 1}" in out
    assert metrics["val_loss"] == history["val_loss"][best] and metrics["accuracy"] == history["accuracy"][best]
    assert f"accuracy: {history['accuracy'][best]:.4f}" in out

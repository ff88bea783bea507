import json
import os

import pytest

from edgeprune.cli import main

pytestmark = pytest.mark.py36
Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def images(tmp_path):
    from device_helpers import scene
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(scene(90, 120, seed=i)).save(str(folder / "s{}.png".format(i)))
    return str(folder)


def test_detect_folder_writes_annotated_images_and_jsonl(tiny_bundle, images, tmp_path, capsys):
    out = str(tmp_path / "out")
    code = main(["detect", tiny_bundle, "--source", images, "--out", out, "--backend", "onnxruntime",
                 "--threads", "1", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 2 and summary["failed"] == 0
    with open(os.path.join(out, "detections.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    assert [r["source"] for r in recs] == ["s0.png", "s1.png"]
    assert sum(len(r["detections"]) for r in recs) == summary["detections"] > 0
    with Image.open(os.path.join(out, recs[0]["annotated"])) as annotated:
        assert annotated.size == (120, 90)


def test_detect_single_image_to_stdout_and_bad_image_fails(tiny_bundle, images, tmp_path, capsys):
    assert main(["detect", tiny_bundle, "--source", os.path.join(images, "s0.png"), "--backend", "onnxruntime",
                 "--conf", "0.5", "--threads", "1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert all(d["score"] > 0.5 for d in line["detections"])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["detect", tiny_bundle, "--source", str(bad), "--backend", "onnxruntime"]) == 1
    out, err = capsys.readouterr()
    assert "bad.jpg" in out
    # the reason is on the console too, not only in the JSON lines
    assert "failed: " in err and "bad.jpg" in err.split("failed: ", 1)[1]


def test_detect_outputs_have_plain_file_modes(tiny_bundle, images, tmp_path):
    out = str(tmp_path / "out")
    old = os.umask(0o022)
    try:
        assert main(["detect", tiny_bundle, "--source", images, "--out", out, "--backend", "onnxruntime",
                     "--threads", "1"]) == 0
    finally:
        os.umask(old)
    for name in os.listdir(out):
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o644, name


def test_labels_stay_inside_the_image():
    import numpy as np

    from jetson.detect import annotate, label_origin

    assert label_origin(5, 30, 40, 11, 100, 80) == (5, 19)          # above the box when there is room
    assert label_origin(90, 2, 40, 11, 100, 80) == (60, 2)          # right edge: shifted left; top: inside the box
    assert label_origin(-3, 79, 40, 11, 100, 80) == (0, 68)         # corner cases clamp to the image
    img = np.zeros((40, 60, 3), np.uint8)
    det = {"box": [50.0, 0.0, 60.0, 10.0], "class_id": 0, "class_name": "storage-tank", "score": 0.91}
    drawn = annotate(img, [det])
    assert drawn[:, :20].any()          # the long label was drawn leftwards from the right edge, not cut off


def test_bench_json_compare(tiny_bundle, tmp_path, capsys):
    out = str(tmp_path / "bench.json")
    code = main(["bench", tiny_bundle, "--compare", tiny_bundle, "--backend", "onnxruntime", "--device", "tx2",
                 "--iterations", "3", "--warmup", "0", "--threads", "1", "--json", "--out", out])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["models"][0]["end_to_end"]["count"] == 3 and "compare" in rep
    assert "only selected a profile" in rep["models"][0]["note"]
    with open(out) as f:
        assert json.load(f)["compare"] == rep["compare"]


def test_usage_errors(tiny_bundle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["detect", tiny_bundle, "--source", "x.png", "--conf", "1.5"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["bench", tiny_bundle, "--iterations", "3", "--duration", "1"])
    assert exc.value.code == 2


def test_missing_bundle_is_one_line_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope"), "--backend", "onnxruntime"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_build_engine_without_tensorrt_says_so(tiny_bundle, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT present: covered by test_tensorrt.py")
    except ImportError:
        pass
    assert main(["build-engine", tiny_bundle, "--device", "tx2", "--precision", "fp16"]) == 1
    assert "TensorRT is not importable" in capsys.readouterr().err


def test_calib_build_cli_and_help(tiny_bundle, images, tmp_path, capsys):
    import shutil
    bundle = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, bundle)
    code = main(["calib", "build", "--data", images, "--bundle", bundle, "--n", "2", "--batch-size", "2", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 2 and summary["batches"] == 1
    with pytest.raises(SystemExit):
        main(["calib", "build", "--help"])
    assert "example" in capsys.readouterr().out


def test_video_without_opencv_is_a_clear_error(tiny_bundle, tmp_path, capsys):
    try:
        import cv2  # noqa: F401
        pytest.skip("OpenCV installed")
    except ImportError:
        pass
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)
    assert main(["detect", tiny_bundle, "--source", str(video), "--backend", "onnxruntime"]) == 1
    assert "video input needs OpenCV" in capsys.readouterr().err

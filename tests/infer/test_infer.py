"""Inference on a user's images (common.infer: api, person, lifting, cli): parity with evaluation, inputs, outputs and errors."""
import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401
from PIL import Image

from common.core.geometry import image_coordinates
from common.data.samples import flip_test_views, shard_writer
from common.infer import api, cli, lifting, person
from common.infer.inputs import InputError, read_image
from common.infer.keypoints import COCO_COPIED, COCO_USED, coco_to_h36m
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.model.samplers import SamplingConfig
from common.pipeline import SnapPosePipeline
from common.pipeline.config import config_to_dict
from common.run.evaluation import evaluate
from common.synthetic.world import encode_sample, make_sample

pytestmark = pytest.mark.usefixtures("single_thread")
SAMPLES = (0, 5)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Two synthetic validation samples: their shard (under root/validation) and their jpg frames as files."""
    root = tmp_path_factory.mktemp("synthetic")
    (root / "validation").mkdir()
    samples = [make_sample("h36m", "validation", i, seed=3) for i in SAMPLES]
    images = []
    with shard_writer(root / "validation" / "data-000000.tar") as writer:
        for sample in samples:
            encoded = encode_sample(sample, "h36m")
            writer.write(encoded)
            path = root / "frames" / f"{sample.key}.jpg"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(encoded["jpg"])  # the very bytes the shard holds
            images.append(path)
    return root, samples, images


@pytest.fixture(scope="module")
def trained(tiny_config, synthetic, tmp_path_factory):
    """A tiny checkpoint that stores its config (random backbone, as the demo's), and that config."""
    root, _, _ = synthetic
    cfg = tiny_config(tmp_path_factory.mktemp("run"), data__root=str(root), evaluation__num_proposals=4,
                      evaluation__timesteps=2, seed=5)
    _, denoiser = build_model(cfg.model)
    torch.manual_seed(1)
    with torch.no_grad():  # untrained weights, perturbed so that every input matters
        for parameter in denoiser.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = save_checkpoint(cfg.checkpoint + "/best_h36m.bin", denoiser, epoch=1, config=config_to_dict(cfg))
    return path, cfg


def _shard_form(sample):
    fields = sample.fields
    return ({"center": fields["center"], "scale": fields["scale"]},
            {"normalized": fields["joints_2d_cpn"], "crop": fields["joints_2d_cpn_crop"]})


def test_lifting_shard_images_gives_exactly_the_evaluated_hypotheses(trained, synthetic, tmp_path):
    weights, cfg = trained
    _, samples, images = synthetic
    cfg.evaluation.save_predictions = str(tmp_path / "predictions.npz")
    evaluate(cfg, weights, device=torch.device("cpu"))
    evaluated = np.load(cfg.evaluation.save_predictions)
    assert list(evaluated["keys"]) == [s.key for s in samples]  # one batch, in shard order
    model = api.load_model(weights, device="cpu")  # config and random backbone from the checkpoint alone
    # The same batch as evaluation's (a batch's composition changes float rounding in the matrix products).
    people = [person.prepare_person(read_image(image), *_shard_form(sample), key=sample.key)
              for sample, image in zip(samples, images)]
    results = lifting.lift_people(model, people)
    np.testing.assert_array_equal(np.stack([r.hypotheses for r in results]), evaluated["hypotheses"])

    for row, (sample, image) in enumerate(zip(samples, images)):
        bbox, keypoints = _shard_form(sample)
        single = api.lift(image, bbox=bbox, keypoints=keypoints, model=model)
        assert single.key == sample.key  # the file's stem seeds the noise
        np.testing.assert_allclose(single.hypotheses, evaluated["hypotheses"][row], atol=1e-5)
        # The same keypoints as image pixels (H36M order) take the pixel path: equal up to float rounding.
        pixels = _pixels(sample)
        again = api.lift(image, bbox=bbox, keypoints=pixels, keypoint_format="h36m", model=model)
        np.testing.assert_allclose(again.hypotheses, evaluated["hypotheses"][row], atol=1e-4)
        np.testing.assert_allclose(again.keypoints_2d, pixels, atol=1e-3)
    other = api.lift(images[0], *_shard_form(samples[0]), model=model, key="another")
    assert not np.allclose(other.hypotheses, evaluated["hypotheses"][0], atol=1e-3)


def test_result_mean_and_spread_follow_the_hypotheses(trained, synthetic):
    weights, _ = trained
    _, samples, images = synthetic
    model = api.load_model(weights, device="cpu")
    result = api.lift(images[1], keypoints=_pixels(samples[1]),
                        keypoint_format="h36m", model=model, sampling=model.config.sampling().replace(hypotheses=6))
    assert result.hypotheses.shape == (6, 17, 3)
    np.testing.assert_allclose(result.mean, result.hypotheses.mean(axis=0), atol=1e-7)
    assert (result.hypotheses[:, 0] == 0).all()
    deviation = result.hypotheses - result.mean
    expected = 1000 * np.linalg.norm(deviation, axis=-1).mean(0)
    np.testing.assert_allclose(result.spread_mm, expected, rtol=1e-5)


def _pixels(sample):
    return image_coordinates(sample.fields["joints_2d_cpn"].astype(np.float64), 1000, 1002)


def test_load_model_gives_a_pipeline_in_eval_mode_and_joins_no_process_group(trained, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    model = api.load_model(trained[0])  # device None: CUDA if present, never a process group
    assert isinstance(model.pipeline, SnapPosePipeline) and model.backbone is model.pipeline.backbone
    assert not model.backbone.training and not model.denoiser.training
    assert not torch.distributed.is_initialized()


def test_box_conversion_and_errors():
    center, scale = person.box_center_scale((100, 50, 96, 128), 640, 480)
    np.testing.assert_allclose(center, [148, 114])
    np.testing.assert_allclose(scale * 200, [96 * 1.25, 128 * 1.25])
    # A wide box grows in height to the crop's 3:4 aspect.
    _, scale = person.box_center_scale((0, 0, 300, 100), 640, 480)
    np.testing.assert_allclose(scale * 200, [300 * 1.25, 400 * 1.25])
    with pytest.raises(InputError, match="outside the 640 x 480 image"):
        person.box_center_scale((700, 10, 50, 50), 640, 480)
    with pytest.raises(InputError, match="w, h > 0"):
        person.box_center_scale((10, 10, 0, 50), 640, 480)


def test_keypoint_errors_name_the_problem():
    with pytest.raises(InputError, match="expected 17 keypoints"):
        person.h36m_keypoints(np.zeros((16, 2)), "coco")
    coco = np.ones((17, 3))
    coco[[1, 15], 2] = 0
    with pytest.raises(InputError, match="left_eye, left_ankle missing"):
        person.h36m_keypoints(coco, "coco")
    coco[1, 2], coco[15, 2], coco[3, 2] = 1, 1, 0  # an ear is not needed
    pixels, scores = person.h36m_keypoints(coco, "coco")
    assert pixels.shape == (17, 2) and scores.shape == (17,)


def _write_frames(folder, synthetic, count=3):
    _, samples, images = synthetic
    folder.mkdir()
    frames = [np.asarray(Image.open(images[i % len(images)]).convert("RGB"))[::4, ::4] for i in range(count)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{i:03d}.png")
    return frames


def _h36m_keypoints_json(path, names, sample):
    pixels = _pixels(sample) / 4
    path.write_text(json.dumps({name: [{"keypoints": pixels.tolist(), "format": "h36m"}] for name in names}))
    return path


def test_cli_folder_gives_one_result_per_image_with_json_npz_and_figures(trained, synthetic, tmp_path, capsys):
    frames = _write_frames(tmp_path / "frames", synthetic, count=2)
    names = [f"frame_{i:03d}.png" for i in range(len(frames))]
    keypoints = _h36m_keypoints_json(tmp_path / "kp.json", names, synthetic[1][0])
    status = cli.main([str(tmp_path / "frames"), "--checkpoint", str(trained[0]), "--keypoints", str(keypoints),
                         "--out", str(tmp_path / "out"), "--device", "cpu", "--batch-size", "2", "--visualize",
                         "--animate", "-num_proposals", "3"])
    assert status == 0
    document = json.loads((tmp_path / "out" / "frames.json").read_text())
    assert [image["image"] for image in document["images"]] == names
    assert all(len(image["persons"]) == 1 for image in document["images"])
    npz = np.load(tmp_path / "out" / "frames.npz")
    assert npz["hypotheses"].shape == (2, 3, 17, 3) and list(npz["images"]) == names
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == 2
    with Image.open(tmp_path / "out" / "frames.gif") as gif:
        assert gif.n_frames == 2
    assert "lifted 2 person(s) in 2 image(s)" in capsys.readouterr().out


def test_cli_gif_video_gives_one_result_per_frame(trained, synthetic, tmp_path):
    frames = _write_frames(tmp_path / "frames", synthetic, count=4)
    video = tmp_path / "clip.gif"
    Image.fromarray(frames[0]).save(video, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    keypoints = _h36m_keypoints_json(tmp_path / "kp.json", [str(i) for i in range(4)], synthetic[1][0])
    status = cli.main([str(video), "--checkpoint", str(trained[0]), "--keypoints", str(keypoints), "--out",
                         str(tmp_path / "out"), "--device", "cpu", "-num_proposals", "2", "--every", "2"])
    assert status == 0
    npz = np.load(tmp_path / "out" / "clip.npz")
    assert list(npz["frames"]) == [0, 2] and list(npz["keys"]) == ["clip_000000", "clip_000002"]


def test_mp4_video_gives_one_result_per_frame(trained, synthetic, tmp_path):
    import av  # pinned in requirements-video.txt, which CI installs: a missing PyAV fails here

    frames = _write_frames(tmp_path / "frames", synthetic, count=3)
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1] // 2 * 2, frames[0].shape[0] // 2 * 2, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame[:stream.height, :stream.width], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    keypoints = _h36m_keypoints_json(tmp_path / "kp.json", ["0", "1", "2"], synthetic[1][0])
    assert cli.main([str(video), "--checkpoint", str(trained[0]), "--keypoints", str(keypoints), "--out",
                       str(tmp_path / "out"), "--device", "cpu", "-num_proposals", "2"]) == 0
    assert list(np.load(tmp_path / "out" / "clip.npz")["frames"]) == [0, 1, 2]


def test_cli_bad_inputs_give_clear_errors(trained, synthetic, tmp_path, caplog):
    weights = str(trained[0])
    common = ["--checkpoint", weights, "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert cli.main([str(tmp_path / "missing.jpg")] + common) == 2
    assert "missing.jpg not found" in caplog.text
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert cli.main([str(broken)] + common) == 2
    assert "cannot read image" in caplog.text
    image = synthetic[2][0]
    assert cli.main([str(image), "--bbox", "5000", "0", "10", "10"] + common) == 2
    assert "lies outside the 1000 x 1002 image" in caplog.text
    short = tmp_path / "short.json"
    short.write_text(json.dumps({image.name: [{"keypoints": [[1, 2]] * 16}]}))
    assert cli.main([str(image), "--keypoints", str(short)] + common) == 2
    assert "expected 17 keypoints" in caplog.text
    # The demo-like model has a random backbone: no heatmap head to find keypoints with.
    assert cli.main([str(image)] + common) == 2
    assert "give keypoints" in caplog.text


def test_coco_mapping_is_used_for_coco_keypoints():
    coco = np.random.default_rng(0).uniform(0, 100, (17, 2))
    pixels, scores = person.h36m_keypoints(coco, "coco")
    assert scores is None
    for h36m, source in COCO_COPIED.items():
        np.testing.assert_array_equal(pixels[h36m], coco[source])


def test_heatmap_keypoints_map_back_to_image_pixels(trained, synthetic, monkeypatch):
    """Keypoints found by the heatmap head land where the heatmap peaks say, in image pixels and H36M order."""
    model = api.load_model(trained[0], device="cpu")
    peaks = np.random.default_rng(0).uniform([8, 8], [40, 56], (17, 2))  # COCO order, heatmap pixels (x, y)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    maps = torch.stack([torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 8) for x, y in peaks])[None]
    monkeypatch.setattr(type(model), "has_heatmaps", property(lambda self: True))
    monkeypatch.setattr(model.backbone, "heatmaps", lambda features: maps.expand(len(features[0]), -1, -1, -1),
                        raising=False)
    image = read_image(synthetic[2][0])
    result = api.lift(image, bbox=(300, 200, 300, 400), model=model, sampling=model.config.sampling().replace(hypotheses=2))
    assert result.keypoint_source == "heatmaps"
    center, scale = person.box_center_scale((300, 200, 300, 400), 1000, 1002)
    box = scale * 200
    # Crop pixel 4 * p is the box's left/top edge plus that share of the box (the crop of docs/formats.md, inverted by hand).
    crop = coco_to_h36m(4 * peaks)
    expected = center + (crop - np.array([191 / 2, 255 / 2])) * (box[0] - 1) / 191
    np.testing.assert_allclose(result.keypoints_2d, expected, atol=0.05)
    assert result.keypoint_scores.shape == (17,) and (result.keypoint_scores > 0.9).all()


REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real" / "coco"


@pytest.mark.skipif(not (REAL / "test_coco.json").is_file(), reason=f"real COCO photos not found at {REAL}")
def test_real_photos_with_coco_annotations(trained, tmp_path, caplog):
    annotations = REAL / "test_coco.json"
    common = [str(REAL), "--checkpoint", str(trained[0]), "--keypoints", str(annotations), "--device", "cpu",
              "-num_proposals", "2", "-timesteps", "1", "--batch-size", "16"]
    assert cli.main(common + ["--out", str(tmp_path / "strict")]) == 2
    assert "missing (visibility or score 0)" in caplog.text
    assert cli.main(common + ["--out", str(tmp_path / "out"), "--skip-incomplete"]) == 0
    coco = json.loads(annotations.read_text())
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    complete = [a for a in coco["annotations"] if all(a["keypoints"][3 * j + 2] > 0 for j in COCO_USED)]
    document = json.loads((tmp_path / "out" / "coco.json").read_text())
    persons = {image["image"]: image["persons"] for image in document["images"]}
    assert sum(len(p) for p in persons.values()) == len(complete) > 0
    for name in {names[a["image_id"]] for a in complete}:
        ours = [a for a in complete if names[a["image_id"]] == name]
        for annotation, lifted in zip(ours, persons[name]):
            keypoints = np.array(annotation["keypoints"], dtype=np.float64).reshape(17, 3)[:, :2]
            h36m = np.array(lifted["keypoints_2d"])
            np.testing.assert_allclose(h36m[0], (keypoints[11] + keypoints[12]) / 2, atol=1e-3)  # mid-hips
            np.testing.assert_allclose(h36m[8], (keypoints[5] + keypoints[6]) / 2, atol=1e-3)  # mid-shoulders
            x, y, w, h = annotation["bbox"]  # the crop is centred on the person's box
            np.testing.assert_allclose(lifted["center"], [x + w / 2, y + h / 2], atol=1e-3)


def test_cli_boxes_file_sets_each_persons_crop(trained, synthetic, tmp_path):
    _write_frames(tmp_path / "frames", synthetic, count=1)
    keypoints = _h36m_keypoints_json(tmp_path / "kp.json", ["frame_000.png"], synthetic[1][0])
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"frame_000.png": [[40, 30, 96, 128]]}))
    assert cli.main([str(tmp_path / "frames"), "--checkpoint", str(trained[0]), "--keypoints", str(keypoints),
                       "--boxes", str(boxes), "--out", str(tmp_path / "out"), "--device", "cpu",
                       "-num_proposals", "2", "-timesteps", "1"]) == 0
    person = json.loads((tmp_path / "out" / "frames.json").read_text())["images"][0]["persons"][0]
    np.testing.assert_allclose(person["center"], [40 + 48, 30 + 64])
    np.testing.assert_allclose(np.array(person["scale"]) * 200, [96 * 1.25, 128 * 1.25], rtol=1e-6)


def test_sampler_and_precision_options_reach_the_sampling(trained, synthetic):
    """--sampler / --precision of inference take evaluation's path: the same hypotheses as the pipeline."""
    weights, _ = trained
    _, samples, images = synthetic
    model = api.load_model(weights, device="cpu")
    people = [person.prepare_person(read_image(images[0]), *_shard_form(samples[0]), key=samples[0].key)]
    paper = lifting.lift_people(model, people)[0].hypotheses
    trailing = lifting.lift_people(model, people, model.config.sampling().replace(sampler="ddim-trailing"))[0].hypotheses
    assert not np.allclose(trailing, paper, atol=1e-4)  # the option changes the sampling...
    batch = {name: torch.stack([value]) for name, value in flip_test_views(
        people[0].crop, torch.from_numpy(people[0].keypoints.normalized), torch.from_numpy(people[0].keypoints.crop)).items()}
    batch["key"] = [people[0].key]
    cfg = model.config
    by_hand = SamplingConfig(sampler="ddim-trailing", steps=cfg.evaluation.timesteps,
                             hypotheses=cfg.evaluation.num_proposals, flip=cfg.evaluation.flip_test, seed=cfg.seed,
                             num_train_timesteps=cfg.train.num_train_timesteps)
    expected = SnapPosePipeline(model.backbone, model.denoiser, by_hand)(batch)
    np.testing.assert_array_equal(trailing, expected[0].numpy())  # ...exactly as evaluation's sampler does
    bf16 = lifting.lift_people(model, people, model.config.sampling().replace(precision="bf16"))[0].hypotheses
    assert np.abs(bf16 - paper).max() < 0.05  # autocast: close to fp32, in metres
    parser = cli.build_parser()
    args = parser.parse_args(["x.jpg", "--checkpoint", "c.bin", "--sampler", "dpm++", "--precision", "bf16"])
    assert (args.sampler, args.precision) == ("dpm++", "bf16")


# EXIF orientation: Pillow's exif_transpose method per tag, and the transform that stores an upright picture so.
STORED_AS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _store_rotated(upright, orientation, path):
    """Write ``upright`` (PIL image) transformed so that a viewer honouring EXIF tag ``orientation`` shows it upright."""
    stored = upright if STORED_AS[orientation] is None else upright.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_images_are_read_upright_whatever_their_exif_orientation(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    path = _store_rotated(Image.fromarray(pixels), orientation, tmp_path / "picture.png")
    np.testing.assert_array_equal(read_image(path), pixels)


def test_rotated_and_upright_pictures_give_the_same_hypotheses(trained, synthetic, tmp_path):
    """Boxes refer to the upright picture: each EXIF-rotated copy lifts to exactly the upright one's hypotheses."""
    model = api.load_model(trained[0], device="cpu")
    upright = Image.open(synthetic[2][0]).convert("RGB")
    box = (300, 200, 300, 400)
    joints = np.random.default_rng(0).uniform([320, 220], [580, 580], (17, 2))  # upright pixels, COCO order
    expected = api.lift(_store_rotated(upright, 1, tmp_path / "upright.png"), bbox=box, keypoints=joints,
                          model=model, key="person", sampling=model.config.sampling().replace(hypotheses=2)).hypotheses
    for orientation in range(2, 9):
        path = _store_rotated(upright, orientation, tmp_path / f"rotated{orientation}.png")
        got = api.lift(path, bbox=box, keypoints=joints, model=model, key="person", sampling=model.config.sampling().replace(hypotheses=2)).hypotheses
        np.testing.assert_array_equal(got, expected, err_msg=f"EXIF orientation {orientation}")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000)).save(path)  # tiny to store; the limit is lowered so it counts as a bomb
    monkeypatch.setattr("common.infer.inputs.MAX_IMAGE_PIXELS", 1_000_000)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self))
    with pytest.raises(InputError, match="3000 x 3000 pixels.*refused before decoding"):
        read_image(path)
    assert not decoded


def _lift_folder(trained, synthetic, tmp_path, *extra):
    if not (tmp_path / "frames").is_dir():
        _write_frames(tmp_path / "frames", synthetic, count=2)
    keypoints = _h36m_keypoints_json(tmp_path / "kp.json", ["frame_000.png", "frame_001.png"], synthetic[1][0])
    return cli.main([str(tmp_path / "frames"), "--checkpoint", str(trained[0]), "--keypoints", str(keypoints),
                       "--out", str(tmp_path / "out"), "--device", "cpu", "-num_proposals", "2", "-timesteps", "1",
                       *extra])


def test_keypoints_far_outside_the_image_are_refused(trained, synthetic, tmp_path, caplog):
    image = synthetic[2][0]  # 1000 x 1002
    far = tmp_path / "far.json"
    far.write_text(json.dumps({image.name: [{"keypoints": (_pixels(synthetic[1][0]) * 10).tolist(), "format": "h36m"}]}))
    assert cli.main([str(image), "--keypoints", str(far), "--checkpoint", str(trained[0]), "--out",
                       str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "keypoints lie far outside the 1000 x 1002 image" in caplog.text


def test_a_video_without_frames_is_an_error(trained, synthetic, tmp_path, monkeypatch, caplog):
    (tmp_path / "empty.mp4").write_bytes(b"")
    monkeypatch.setattr(cli, "count_frames", lambda path: 0)
    monkeypatch.setattr(cli, "video_frames", lambda *args: iter(()))  # PyAV decoding nothing
    assert cli.main([str(tmp_path / "empty.mp4"), "--checkpoint", str(trained[0]), "--out", str(tmp_path / "out"),
                       "--device", "cpu", "--bbox", "0", "0", "10", "10"]) == 2
    assert "empty.mp4 gave no frames" in caplog.text
    assert not (tmp_path / "out" / "empty.json").exists()


def test_a_full_disk_or_ctrl_c_while_writing_results_keeps_the_previous_files(trained, synthetic, tmp_path,
                                                                              monkeypatch, caplog):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "out").mkdir()
    killed = tmp_path / "out" / f".frames.json.tmp-{int(finished.stdout)}"  # left by a run killed with -9
    killed.write_text('{"images": [')
    assert _lift_folder(trained, synthetic, tmp_path) == 0
    assert not killed.exists()  # removed, never read as a result
    outputs = {path: path.read_bytes() for path in (tmp_path / "out").iterdir()}
    assert sorted(p.name for p in outputs) == ["frames.json", "frames.npz"]

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("common.core.files.os.fsync", full)
        assert _lift_folder(trained, synthetic, tmp_path, "--seed", "9") == 2
    assert "the disk is full while writing" in caplog.text and "frames.json" in caplog.text
    assert {path: path.read_bytes() for path in (tmp_path / "out").iterdir()} == outputs  # no temporaries either

    calls = []

    def interrupted(value, *args, **kwargs):
        calls.append(value)
        if len(calls) == 2:  # after the header, in the middle of the images
            raise KeyboardInterrupt
        return json_dumps(value, *args, **kwargs)

    json_dumps = json.dumps
    monkeypatch.setattr(cli.json, "dumps", interrupted)
    assert _lift_folder(trained, synthetic, tmp_path, "--seed", "9") == 130  # Ctrl-C: no traceback
    monkeypatch.undo()
    assert "interrupted: results already in" in caplog.text
    assert {path: path.read_bytes() for path in (tmp_path / "out").iterdir()} == outputs

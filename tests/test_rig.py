"""Camera rigs: the file format, its checks, the anipose import, and synthetic data for any rig."""
import json

import numpy as np
import pytest

from iivformer import archives, cameras, rig, synthetic
from iivformer.baselines import evaluate_method, triangulate
from iivformer.cli import main
from iivformer.errors import DataError, IIVFormerError
from iivformer.evaluate import check_same_cameras


def look_at(position, target) -> np.ndarray:
    """Camera-to-world rotation of a camera at `position` looking at `target`, image y downwards."""
    z = np.asarray(target, float) - position
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def three_camera_rig() -> dict:
    """A rig this project has never seen: 3 cameras around (1.5, -0.8) m, 1280x720, OpenCV lenses."""
    target = np.array([1500.0, -800.0, 1000.0])
    entries = []
    for index, (angle, radius) in enumerate([(10, 4200), (140, 3600), (250, 5000)]):
        position = target + [radius * np.cos(np.radians(angle)), radius * np.sin(np.radians(angle)), 700.0]
        entries.append({"id": f"lab-{index}", "resolution": [1280, 720], "focal_length": [950.0, 940.0],
                        "center": [641.5, 358.0], "radial_distortion": [-0.08, 0.02, 0.0],
                        "tangential_distortion": [0.0012, -0.0007], "distortion_model": "opencv",
                        "orientation": cameras.matrix_to_quaternion(look_at(position, target)).tolist(),
                        "translation": position.tolist()})
    return {"name": "lab3", "cameras": entries}


def opencv_project(points, rotation, translation, matrix, distortions) -> np.ndarray:
    """OpenCV's projectPoints written out: x = R X + t, k1 k2 p1 p2 k3 distortion, camera matrix."""
    k1, k2, p1, p2, k3 = distortions
    camera = points @ rotation.T + translation
    x, y = camera[:, 0] / camera[:, 2], camera[:, 1] / camera[:, 2]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([matrix[0, 0] * xd + matrix[0, 2], matrix[1, 1] * yd + matrix[1, 2]], axis=1)


def rodrigues_vector(matrix) -> np.ndarray:
    angle = np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))
    axis = np.array([matrix[2, 1] - matrix[1, 2], matrix[0, 2] - matrix[2, 0], matrix[1, 0] - matrix[0, 1]])
    return axis / (2 * np.sin(angle)) * angle


@pytest.fixture(scope="module")
def lab3(tmp_path_factory):
    """(rig, path of its file, exact synthetic archives made through it)."""
    folder = tmp_path_factory.mktemp("lab3")
    path = folder / "lab3.json"
    path.write_text(json.dumps(three_camera_rig()))
    loaded = rig.load_rig(path)
    path_3d, path_2d = synthetic.write_dataset(folder / "data", "tiny", detector_noise=0, progress=False, rig=loaded)
    return loaded, path, path_3d, path_2d


def test_synthetic_archives_of_a_new_rig_reproject_exactly(lab3):
    loaded, _, path_3d, path_2d = lab3
    data = archives.load_archives(path_3d, path_2d)
    assert data.rig.ids == ["lab-0", "lab-1", "lab-2"] and data.num_views == 3
    worst = 0.0
    for subject in data.subjects:
        for recording in data.recordings(subject):
            world_mm = data.positions_3d[subject][recording].astype(np.float64) * 1000
            for view, camera in enumerate(loaded.cameras):
                pixels = data.positions_2d[subject][recording][:, view]
                assert (pixels >= 0).all() and (pixels <= [camera.res_w, camera.res_h]).all()
                worst = max(worst, np.abs(cameras.project(world_mm, camera) - pixels).max())
    assert worst < 0.01  # float32 storage of ~1000 px values: about 1e-4 px


def test_a_rig_dataset_evaluates_with_its_own_cameras(lab3):
    _, _, path_3d, path_2d = lab3
    evaluation = evaluate_method("triangulation", path_3d, path_2d)
    assert evaluation.per_action("p1")["mean"] < 0.5  # noise-free 2D through the right cameras
    assert evaluation.provenance["cameras"] == ["lab-0", "lab-1", "lab-2"]
    assert evaluation.rig.ids == ["lab-0", "lab-1", "lab-2"]


def test_check_accepts_a_rig_dataset(lab3, capsys):
    _, _, path_3d, path_2d = lab3
    assert main(["check", "--data_3d", str(path_3d), "--data_2d", str(path_2d)]) == 0
    assert "3 cameras (rig lab3)" in capsys.readouterr().out


def test_rig_file_round_trip(lab3, tmp_path):
    loaded, _, _, _ = lab3
    rig.save_rig(loaded, tmp_path / "copy.json")
    again = rig.load_rig(tmp_path / "copy.json")
    assert again.to_dict() == loaded.to_dict()


@pytest.mark.parametrize("subject", ["S1", "S5", "S6", "S7", "S8", "S9", "S11"])
def test_built_in_human36m_rigs_pass_the_checks(subject):
    built_in = rig.load_rig(f"h36m:{subject}")
    rig.check_rig(built_in, subject)
    assert built_in.ids == cameras.camera_ids() and len(built_in) == 4
    point = np.array([[100.0, 200.0, 900.0]])
    for camera, original in zip(built_in.cameras, cameras.cameras_for(subject)):
        assert np.array_equal(cameras.project(point, camera), cameras.project(point, original))


def broken(change) -> dict:
    data = three_camera_rig()
    change(data["cameras"])
    return data


def _turn_around(entries):
    rotation = cameras.quaternion_to_matrix(np.asarray(entries[1]["orientation"]))
    entries[1]["orientation"] = cameras.matrix_to_quaternion(rotation @ np.diag([-1.0, 1.0, -1.0])).tolist()


@pytest.mark.parametrize("change, message", [
    (lambda c: c[1].update(orientation=[0.9, 0.3, 0.3, 0.3]), "camera 'lab-1': 'orientation' is not a rotation"),
    (lambda c: c[2].update(focal_length=[950.0, 0.0]), "camera 'lab-2': focal length [950.0, 0.0] px must be positive"),
    (lambda c: [e.update(translation=[v / 1000 for v in e["translation"]]) for e in c], "these look like metres"),
    (_turn_around, "camera 'lab-1' does not see the capture volume"),
    (lambda c: c[0].update(center=[5000.0, 358.0]), "camera 'lab-0' does not see the capture volume"),
    (lambda c: c[2].update(id="lab-0"), "camera ids repeat"),
    (lambda c: c[0].update(resolution=[1280.5, 720]), "'resolution' should be two positive whole numbers"),
    (lambda c: c[0].pop("translation"), "camera 'lab-0': 'translation' should be a list of 3 numbers"),
    (lambda c: c[0].update(distortion_model="fisheye"), "distortion_model 'fisheye'"),
    (lambda c: c.pop(), None),  # 2 cameras still make a rig
])
def test_bad_rigs_get_one_line_naming_the_camera(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(broken(change)))
    if message is None:
        assert len(rig.load_rig(path)) == 2
        return
    with pytest.raises(DataError) as caught:
        rig.load_rig(path)
    assert message in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_unreadable_rig_files(tmp_path, capsys):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    for spec, message in [(garbage, "not valid JSON"), (tmp_path / "missing.json", "file not found"),
                          ("/dev/zero", "not a regular file"), ("h36m:S2", "no camera calibration for subject 'S2'")]:
        assert main(["rig", str(spec)]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_a_model_lifts_only_the_cameras_it_was_trained_on(lab3):
    loaded = lab3[0]
    check_same_cameras({"rig": loaded.to_dict()}, loaded, "m.pth", "d.npz")
    check_same_cameras({}, None, "cpn.pth", "d.npz")
    with pytest.raises(IIVFormerError, match=r"m.pth: trained on the cameras lab-0, lab-1, lab-2 \(rig 'lab3'\), "
                                              r"but d.npz holds the cameras 54138969"):
        check_same_cameras({"rig": loaded.to_dict()}, None, "m.pth", "d.npz")


# ------------------------------------------------------------------------------ anipose calibration.toml

def anipose_toml(world_rotation, world_shift_m) -> str:
    """The three-camera rig as aniposelib writes it, in metres, in a world turned by `world_rotation`
    (a point X mm of the rig's world is at world_rotation @ X / 1000 + world_shift_m there)."""
    tables = []
    for index, entry in enumerate(three_camera_rig()["cameras"]):
        camera_to_world = world_rotation @ cameras.quaternion_to_matrix(np.asarray(entry["orientation"]))
        rotation = camera_to_world.T
        centre = world_rotation @ np.asarray(entry["translation"]) / 1000 + world_shift_m
        (fx, fy), (cx, cy) = entry["focal_length"], entry["center"]
        k1, k2, k3 = entry["radial_distortion"]
        p1, p2 = entry["tangential_distortion"]
        tables.append(f"[cam_{index}]\nname = \"{entry['id']}\"\nsize = [1280, 720]\n"
                      f"matrix = [[{fx}, 0.0, {cx}], [0.0, {fy}, {cy}], [0.0, 0.0, 1.0]]\n"
                      f"distortions = [{k1}, {k2}, {p1}, {p2}, {k3}]\n"
                      f"rotation = {rodrigues_vector(rotation).tolist()}\n"
                      f"translation = {(-rotation @ centre).tolist()}\n")
    return "\n".join(tables) + "\n[metadata]\nadjusted = false\nerror = 0.4\n"


Y_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # world z -> -y (a camera-like frame)


def read_toml_cameras(text):
    import tomllib
    tables = tomllib.loads(text)
    return [tables[f"cam_{i}"] for i in range(3)]


def test_anipose_import_reprojects_and_triangulates_like_opencv(tmp_path):
    text = anipose_toml(Y_DOWN, np.array([0.3, -0.2, 2.0]))
    path = tmp_path / "calibration.toml"
    path.write_text(text)
    imported = rig.from_anipose(path, units="m", up="-y")
    assert imported.ids == ["lab-0", "lab-1", "lab-2"]
    assert np.allclose(imported.capture_centre(), [0, 0, rig.CENTRE_HEIGHT_MM], atol=1e-6)
    rng = np.random.default_rng(0)
    original_mm = np.array([1500.0, -800.0, 0.0]) + rng.uniform([-400, -400, 0], [400, 400, 1800], (50, 3))
    in_toml = original_mm @ Y_DOWN.T / 1000 + [0.3, -0.2, 2.0]
    pixels = []
    for table in read_toml_cameras(text):
        rotation = rig._rodrigues(np.asarray(table["rotation"]))
        pixels.append(opencv_project(in_toml, rotation, np.asarray(table["translation"]),
                                     np.asarray(table["matrix"]), table["distortions"]))
    normalized = np.stack([cameras.undistort((uv - cam.center) / cam.focal_length, cam, iterations=50)
                           for uv, cam in zip(pixels, imported.cameras)], axis=1)
    points = triangulate(normalized, np.stack([c.rotation for c in imported.cameras]),
                         np.stack([c.translation for c in imported.cameras]))
    for uv, camera in zip(pixels, imported.cameras):  # the same pixels through the imported rig
        assert np.abs(cameras.project(points, camera) - uv).max() < 1e-4
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    assert np.abs(distances - np.linalg.norm(original_mm[:, None] - original_mm[None], axis=-1)).max() < 1e-3
    heights = points[:, 2] - points[:, 2].min()
    assert np.abs(heights - (original_mm[:, 2] - original_mm[:, 2].min())).max() < 1e-3  # up is +Z


def test_anipose_auto_up_and_units_give_the_same_rig(tmp_path):
    text = anipose_toml(Y_DOWN, np.zeros(3))
    (tmp_path / "m.toml").write_text(text)
    explicit = rig.from_anipose(tmp_path / "m.toml", units="m", up="-y")
    automatic = rig.from_anipose(tmp_path / "m.toml", units="m")
    turned = np.array([c.rotation[:, 2] for c in automatic.cameras])  # the cameras look slightly down
    assert (turned[:, 2] < 0).all()
    heights = [c.translation[2] for c in explicit.cameras]
    assert np.allclose(heights, [c.translation[2] for c in automatic.cameras], atol=150)  # mm: auto is close
    in_mm = tmp_path / "mm.toml"
    mm_text = text
    for table in read_toml_cameras(text):
        mm_text = mm_text.replace(str(table["translation"]), str([v * 1000 for v in table["translation"]]))
    in_mm.write_text(mm_text)
    again = rig.from_anipose(in_mm, units="mm", up="-y")
    for a, b in zip(explicit.cameras, again.cameras):
        assert np.allclose(a.translation, b.translation, atol=1e-6) and np.allclose(a.rotation, b.rotation)


def test_rig_command_imports_and_writes_a_rig(tmp_path, capsys):
    (tmp_path / "calibration.toml").write_text(anipose_toml(Y_DOWN, np.zeros(3)))
    out = tmp_path / "rig.json"
    assert main(["rig", str(tmp_path / "calibration.toml"), "--units", "m", "--up=-y", "--out", str(out)]) == 0
    assert "3 cameras" in capsys.readouterr().out
    assert rig.load_rig(out).ids == ["lab-0", "lab-1", "lab-2"]
    (tmp_path / "broken.toml").write_text("[cam_0]\nname = 'a'\nmatrix = [[1, 2, 3]]\n")
    assert main(["rig", str(tmp_path / "broken.toml")]) == 1
    assert "'matrix' should be a 3x3 camera matrix" in capsys.readouterr().err
    (tmp_path / "metres.toml").write_text(anipose_toml(Y_DOWN, np.zeros(3)))
    assert main(["rig", str(tmp_path / "metres.toml")]) == 1  # read as millimetres: a room 4 mm across
    assert "these look like metres" in capsys.readouterr().err


def test_a_camera_laid_out_by_what_it_looks_at_sees_it_in_the_middle_upright():
    entry = rig.camera_looking_at("c", (3000.0, -2000.0, 2200.0), (0.0, 0.0, 1000.0), (1920, 1080), 1100.0)
    camera = rig._camera_from_dict(entry, "test", 0)
    np.testing.assert_allclose(cameras.project(np.array([0.0, 0.0, 1000.0]), camera), [960.0, 540.0], atol=1e-9)
    above = cameras.project(np.array([0.0, 0.0, 1500.0]), camera)
    assert above[1] < 540.0 and abs(above[0] - 960.0) < 1e-6  # up in the world is up in the image
    with pytest.raises(DataError, match="looks straight up or down"):
        rig.camera_looking_at("c", (0.0, 0.0, 3000.0), (0.0, 0.0, 0.0))

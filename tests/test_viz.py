"""iivformer.viz: matplotlib figures and tables, plotly viewer and HTML export, the explorer."""
import numpy as np
import pytest
import torch

from iivformer import skeleton, tables
from iivformer.prepare import Normalization, Split
from iivformer.errors import IIVFormerError
from iivformer.evaluate import Evaluation
from iivformer.provenance import PUBLISHED_MM
from iivformer.model import IIVFormer, ModelConfig
from iivformer.viz import figures, viewer
from iivformer.viz.explorer import Explorer

RECORDINGS = [("S9", "Walking 1"), ("S9", "Sitting"), ("S11", "Walking")]
FRAMES = 12


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    count = len(RECORDINGS) * FRAMES
    inputs = rng.normal(size=(count, 4, 17, 2)).astype(np.float32)
    targets = rng.normal(0, 300, (count, 1, 17, 3)).astype(np.float32)
    source_index = np.repeat(np.arange(len(RECORDINGS)), FRAMES).astype(np.int32)
    frame_index = np.tile(np.arange(FRAMES), len(RECORDINGS)).astype(np.int32)
    return Split(inputs, targets, list(RECORDINGS), source_index, frame_index)


@pytest.fixture(scope="module")
def evaluation(split):
    rng = np.random.default_rng(1)
    targets = split.targets[:, 0]
    predictions = targets + rng.normal(0, 40, targets.shape).astype(np.float32)
    p1 = np.linalg.norm(predictions - targets, axis=-1)
    return Evaluation(predictions, targets, {"p1": p1, "p2": p1 * 0.7}, split.subjects, split.recordings,
                      split.actions, split.frame_index)


@pytest.fixture(scope="module")
def prepared(split):
    class Prepared:  # what the explorer reads of prepare.Prepared
        test = split
        normalization = Normalization(np.full((4, 17, 2), 500, np.float32), np.full((4, 17, 2), 100, np.float32))
    return Prepared()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return IIVFormer(ModelConfig(embed_dim_ratio=8, depth=2, num_heads=2)).eval()


def test_results_tables_hold_every_action_and_the_mean(evaluation):
    results = evaluation.results()
    latex = tables.results_table(results, "latex")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrr}"):
        assert rule in latex
    markdown = tables.results_table(results, "markdown")
    assert markdown.splitlines()[0] == "| Action | P1 (mm) | P2 (mm) |"
    for action in evaluation.action_names + ["mean"]:
        name = "Mean" if action == "mean" else action
        cells = [f"{results[p][action]:.1f}" for p in ("p1", "p2")]
        assert f"{name} & {cells[0]} & {cells[1]} \\\\" in latex
        assert f"| {name} | {cells[0]} | {cells[1]} |" in markdown
    assert latex.index(r"\midrule", latex.index("Walking")) < latex.index("Mean")
    with pytest.raises(ValueError):
        tables.results_table(results, "html")


def test_write_tables(tmp_path, evaluation):
    paths = tables.write_tables(evaluation.results(), tmp_path / "tables")
    assert sorted(p.suffix for p in paths) == [".md", ".tex"]
    assert all(p.stat().st_size > 0 for p in paths)


def _check_labelled(fig):
    assert fig._suptitle is not None or all(ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>")
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        shows_x = any(label.get_visible() for label in ax.get_xticklabels())  # shared x: bottom row only
        assert (ax.get_xlabel() or not shows_x) and ax.get_ylabel(), f"unlabelled axes in {fig._suptitle}"
        if hasattr(ax, "get_zlabel"):
            assert "mm" in ax.get_zlabel()


def test_figures_are_titled_and_labelled(evaluation, prepared):
    from iivformer.cameras import cameras_for

    history = [{"epoch": e, "train_mpjpe": 100.0 / e, "test_mpjpe": 120.0 / e, "best_epoch": e,
                "best_metric": 120.0 / e} for e in (1, 2, 3)]
    made = [
        figures.plot_views_2d(np.random.default_rng(0).uniform(0, 1000, (4, 17, 2)), cameras_for("S9")),
        figures.plot_scene(evaluation.targets[0] + [0, 0, 900], cameras_for("S9")),
        figures.plot_frames_per_action({"S1": {"Walking": 10, "Eating": 5}, "S9": {"Walking": 7}}),
        figures.plot_normalization(prepared.normalization),
        figures.plot_training_curves(history),
        figures.plot_per_action(evaluation.results()),
        figures.plot_per_joint(evaluation),
        figures.plot_error_distribution(evaluation),
        figures.plot_predictions(evaluation),
    ]
    for fig in made:
        _check_labelled(fig)


def test_save_figure_writes_pdf_svg_png(tmp_path, evaluation):
    with figures.paper_style():
        fig = figures.plot_per_action(evaluation.results())
    paths = figures.save_figure(fig, "per_action", tmp_path / "figures")
    assert [p.name for p in paths] == ["per_action.pdf", "per_action.svg", "per_action.png"]
    heads = [p.read_bytes()[:200] for p in paths]
    assert heads[0].startswith(b"%PDF") and b"<svg" in paths[1].read_bytes() and heads[2].startswith(b"\x89PNG")


def test_caption_sits_under_the_figure_inside_what_is_saved(tmp_path, evaluation):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    text = "Figure 1: error per action (mm), S9 and S11."
    with figures.paper_style():
        fig = figures.plot_per_action(evaluation.results())
    paths = figures.save_figure(fig, "captioned", tmp_path, caption=text)
    caption = fig._supxlabel
    assert caption in fig.get_children() and caption.get_text() == text and caption.get_gid() == figures.CAPTION_ID
    assert text in paths[1].read_text()  # the SVG keeps its text as text
    with figures.paper_style():
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        extent, saved = caption.get_window_extent(renderer), fig.get_tightbbox(renderer)
    assert fig.bbox.contains(extent.x0, extent.y0) and fig.bbox.contains(extent.x1, extent.y1)  # not clipped
    saved = saved.transformed(fig.dpi_scale_trans)  # inches to pixels
    assert saved.contains(extent.x0, extent.y0) and saved.contains(extent.x1, extent.y1)  # inside the tight box
    assert all(extent.y1 <= ax.get_tightbbox(renderer).y0 for ax in fig.axes)  # under the axes and their labels
    pixels = np.asarray(canvas.buffer_rgba())[:, :, :3].astype(int)
    rows = slice(int(fig.bbox.height - extent.y1), int(fig.bbox.height - extent.y0))
    region = pixels[rows, int(extent.x0):int(extent.x1)]
    assert (np.abs(region - 89).max(axis=-1) < 20).sum() > 20  # drawn, in grey (0.35)
    figures.add_caption(fig, "a second caption replaces the first")
    assert fig._supxlabel.get_text() == "a second caption replaces the first"
    labelled = figures.plot_per_action(evaluation.results())
    labelled.supxlabel("a label of the figure's own")
    with pytest.raises(ValueError):
        figures.add_caption(labelled, text)


def test_published_lines_only_when_passed(evaluation):
    def published_labels(fig):
        return [t.get_text() for t in fig.axes[0].get_legend().get_texts() if "published" in t.get_text()]

    assert published_labels(figures.plot_per_action(evaluation.results())) == []
    labels = published_labels(figures.plot_per_action(evaluation.results(), PUBLISHED_MM))
    assert len(labels) == 2 and "30.9" in labels[0] and "24.0" in labels[1]


def test_live_curves_work_headless():
    live = figures.LiveCurves()
    for epoch in (1, 2):
        live({"epoch": epoch, "train_mpjpe": 50.0, "test_mpjpe": 60.0, "best_epoch": 1, "best_metric": 60.0})
    assert len(live.history) == 2 and live.figure.axes[0].get_ylabel() == "MPJPE (mm)"


def test_skeleton_figure_colours_bones_by_error(evaluation):
    errors = np.linspace(0, 100, 17)
    fig = viewer.skeleton_figure(evaluation.predictions[0], evaluation.targets[0], errors, "t", cmax=100)
    assert len(fig.data) == 1 + len(skeleton.BONES) + 1
    assert fig.data[0].name == "ground truth"
    for trace, (child, parent) in zip(fig.data[1:-1], skeleton.BONES):
        assert trace.line.color == viewer.error_colour(errors[child], 100)
        np.testing.assert_allclose(trace.x, evaluation.predictions[0][[parent, child], 0])
    joints = fig.data[-1]
    np.testing.assert_allclose(joints.marker.color, errors)
    assert "mm" in joints.marker.colorbar.title.text and joints.marker.cmax == 100
    assert fig.layout.scene.aspectmode == "cube" and "mm" in fig.layout.scene.xaxis.title.text
    assert fig.layout.scene.xaxis.range == fig.layout.scene.zaxis.range  # equal aspect around the root
    assert viewer.error_colour(0, 100) != viewer.error_colour(100, 100)


def test_sequence_figure_has_frames_and_slider(evaluation):
    fig = viewer.sequence_figure(evaluation, "S9", "Walking 1", frames=range(0, 10), step=3)
    assert [frame.name for frame in fig.frames] == ["0", "3", "6", "9"]
    assert len(fig.layout.sliders) == 1 and len(fig.layout.sliders[0].steps) == 4
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["Play", "Pause"]
    sample = np.flatnonzero((evaluation.recordings == "Walking 1") & (evaluation.frame_index == 6))[0]
    np.testing.assert_allclose(fig.frames[2].data[-1].x, evaluation.predictions[sample][:, 0], rtol=1e-6)
    with pytest.raises(IIVFormerError):
        viewer.sequence_figure(evaluation, "S9", "Walking 1", frames=range(100, 200))


def test_export_html_is_standalone(tmp_path, evaluation):
    fig = viewer.sequence_figure(evaluation, "S9", "Walking 1", step=4)
    path = viewer.export_html(fig, tmp_path / "viewer" / "S9_Walking_1.html")
    text = path.read_text()
    assert path.stat().st_size > 1_000_000  # plotly.js is inside
    assert '<script src="http' not in text and "Plotly.newPlot" in text
    assert not list(path.parent.glob(".*tmp"))


def test_attention_figure_shapes(model, split):
    attention = viewer.attention_of(model, split.inputs[0])
    assert attention["intra"][0].shape == (1, 4, 2, 17, 17) and attention["inter"][0].shape == (1, 2, 4, 4)
    fig = viewer.attention_figure(attention)
    assert [np.shape(trace.z) for trace in fig.data] == [(17, 17)] * 4 + [(4, 4)]
    assert list(fig.data[0].x) == list(skeleton.JOINT_NAMES)
    np.testing.assert_allclose(np.sum(fig.data[0].z, axis=1), 1, rtol=1e-5)  # softmax rows
    one_head = viewer.attention_figure(attention, block=0, head=1)
    np.testing.assert_allclose(one_head.data[4].z, attention["inter"][0][0, 1], rtol=1e-6)


def test_explorer_select_updates_the_figure(evaluation, prepared, model):
    explorer = Explorer(evaluation, prepared, model)
    assert list(explorer.subject_menu.options) == ["S9", "S11"]
    sample = explorer.select("S11", "Walking", 5)
    assert evaluation.subjects[sample] == "S11" and evaluation.frame_index[sample] == 5
    np.testing.assert_allclose(explorer.figure.data[-1].x, evaluation.predictions[sample][:, 0], rtol=1e-6)
    np.testing.assert_allclose(explorer.figure.data[-1].marker.color, evaluation.errors["p1"][sample], rtol=1e-6)
    assert explorer.slider.value == 5 and explorer.recording_menu.value == "Walking"
    assert "frame 5" in explorer.info.value
    explorer.slider.value = 7  # moving the slider shows that frame
    assert evaluation.frame_index[explorer.sample] == 7
    worst = explorer.show_worst("Sitting")
    assert worst == evaluation.worst_frames("Sitting", 10)[0] and len(explorer.worst.options) == 10
    assert explorer.recording_menu.value == "Sitting"
    assert [np.shape(t.z) for t in explorer.attention_figure().data][-1] == (4, 4)
    assert explorer.views_figure().axes[0].get_xlabel() == "x (px)"
    with pytest.raises(IIVFormerError):
        explorer.select("S9", "Eating", 0)


def test_comparison_table_lists_each_method_with_its_means(evaluation):
    table = tables.comparison_table({"model": evaluation.results(), "copy": evaluation.results()})
    lines = table.strip().splitlines()
    assert lines[0] == "| Method | P1 (mm) | P2 (mm) |" and len(lines) == 4
    expected = f"| model | {evaluation.per_action('p1')['mean']:.1f} | {evaluation.per_action('p2')['mean']:.1f} |"
    assert lines[2] == expected


def test_views_lab_figures_are_titled_and_labelled():
    from iivformer.viz import views as view_figures

    entry = {"model": {"p1": 40.0, "p2": 30.0}, "triangulation": {"p1": 35.0, "p2": 28.0}}
    sweep = {0.0: entry, 5.0: entry}
    forensics = {"inputs": entry, "cameras": {cam: entry for cam in ("54138969", "55011271")},
                 "pixel_error_per_joint": np.ones((2, 17)).tolist()}
    subsets = {"0": {"model": entry["model"]}, "0,1": entry}
    for fig in (view_figures.plot_noise_sweep(sweep), view_figures.plot_camera_costs(forensics, [0.5, 0.5]),
                view_figures.plot_pixel_error(forensics["pixel_error_per_joint"], [0, 1]),
                view_figures.plot_subsets(subsets)):
        axes = fig.axes[0]
        assert axes.get_xlabel() and axes.get_ylabel() and (axes.get_title() or fig._suptitle)
    bars = view_figures.plot_subsets(subsets).axes[0].patches
    assert [round(bar.get_height(), 1) for bar in bars if np.isfinite(bar.get_height())] == [40.0, 40.0, 35.0]


def test_the_offline_viewer_shows_every_views_input_beside_the_3d(evaluation):
    rng = np.random.default_rng(1)
    pixels = rng.uniform(0, 1000, (len(evaluation), 4, 17, 2))
    plain = viewer.sequence_figure(evaluation, "S9", "Walking 1")
    fig = viewer.sequence_figure(evaluation, "S9", "Walking 1", pixels=pixels)
    assert len(fig.data) == len(plain.data) + 4 and all(len(frame.data) == len(fig.data) for frame in fig.frames)
    samples = np.flatnonzero((evaluation.subjects == "S9") & (evaluation.recordings == "Walking 1"))
    samples = samples[np.argsort(evaluation.frame_index[samples], kind="stable")]
    last_view = fig.frames[-1].data[-1]  # the last camera's 2D in the last frame
    child, parent = skeleton.BONES[0]
    assert last_view.x[:2] == (pixels[samples[-1], 3, parent, 0], pixels[samples[-1], 3, child, 0])
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # image rows grow downwards

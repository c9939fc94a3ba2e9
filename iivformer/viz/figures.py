"""Paper figures with matplotlib, in one consistent style (the tables are in iivformer.tables).

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state), so it
works headless, is shown once when it is a notebook cell's last value, and can be written with
:func:`save_figure` as PDF, SVG and PNG, with a one-line caption under it if asked
(:func:`add_caption`). Lengths are millimetres, image positions pixels.
"""
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from iivformer import skeleton
from iivformer.tables import actions_then_mean

PAPER_STYLE = {
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True,
    "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "savefig.bbox": "tight", "savefig.dpi": 200, "figure.dpi": 100,
    "pdf.fonttype": 42, "svg.fonttype": "none",
}
SIDE_COLOURS = {"left": "#1f77b4", "right": "#d62728", "centre": "#222222"}
TRUTH_COLOUR = "#b0b0b0"  # ground truth drawn under a prediction
PROTOCOL_LABELS = {"p1": "Protocol 1 (MPJPE)", "p2": "Protocol 2 (P-MPJPE)"}
PROTOCOL_COLOURS = {"p1": "#4c72b0", "p2": "#dd8452"}
CAPTION_ID = "caption"  # the gid of the label add_caption writes


def paper_style():
    """Context manager: the paper rcParams for the figures made inside it."""
    return matplotlib.rc_context(PAPER_STYLE)


def add_caption(fig: Figure, text: str):
    """Write `text` as one small grey line centred under everything in `fig`; returns the text.

    The caption is the figure's bottom label (``supxlabel``), so constrained layout keeps room
    for it inside the figure and a tight bounding box includes it (every figure here is made
    with constrained layout). A second call replaces it; a figure that already has a bottom
    label of its own is refused (ValueError)."""
    if "\n" in text:
        raise ValueError(f"a caption is one line, not {text!r}")
    existing = fig._supxlabel  # matplotlib has no public getter for the artist
    if existing is not None and existing.get_gid() != CAPTION_ID:
        raise ValueError("the figure already has a bottom label (supxlabel); it has no room for a caption")
    caption = fig.supxlabel(text, fontsize=7, color="0.35")
    caption.set_gid(CAPTION_ID)
    return caption


def save_figure(fig: Figure, stem: str, folder, caption: str = None) -> list:
    """Write `fig` as <folder>/<stem>.pdf, .svg and .png, with :func:`add_caption` under it when
    `caption` is given; returns the three paths."""
    if caption is not None:
        add_caption(fig, caption)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.{suffix}" for suffix in ("pdf", "svg", "png")]
    with paper_style():
        for path in paths:
            fig.savefig(path)
    return paths


def _bone_colour(child: int) -> str:
    return SIDE_COLOURS[skeleton.joint_side(child)]


def plot_views_2d(pixels, cameras=None, title="2D joints in the camera views", columns=None) -> Figure:
    """The 2D skeleton (V, J, 2) in pixels in each view, `columns` views per row (default: all);
    `cameras` (list of Camera) gives the image size and names. Left limbs blue, right red."""
    pixels = np.asarray(pixels)
    views = len(pixels)
    columns = columns or views
    rows = -(-views // columns)
    fig = Figure(figsize=(3.0 * columns, 3.0 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for view, ax in enumerate(axes):
        for child, parent in skeleton.BONES:
            ax.plot(*pixels[view, [parent, child]].T, color=_bone_colour(child), linewidth=2)
        ax.scatter(*pixels[view].T, s=8, color="black", zorder=3)
        if cameras is not None:
            camera = cameras[view]
            ax.set_xlim(0, camera.res_w)
            ax.set_ylim(camera.res_h, 0)  # image rows grow downwards
            ax.set_title(f"camera {view + 1} ({camera.id})")
        else:
            ax.invert_yaxis()
            ax.set_title(f"camera {view + 1}")
        ax.set_aspect("equal")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    fig.suptitle(title)
    return fig


def _equal_3d(ax, points) -> None:
    low, high = points.min(axis=0), points.max(axis=0)
    centre, half = (low + high) / 2, max((high - low).max() / 2, 1.0)
    for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
        setter(c - half, c + half)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.set_box_aspect((1, 1, 1))


def plot_pose_3d(ax, pose, label=None, colour=None, alpha=1.0) -> None:
    """Draw a 3D pose (J, 3) in mm on a 3D axes; bones by side unless one `colour` is given."""
    pose = np.asarray(pose)
    for index, (child, parent) in enumerate(skeleton.BONES):
        ax.plot(*pose[[parent, child]].T, color=colour or _bone_colour(child), linewidth=2, alpha=alpha,
                label=label if index == 0 else None)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    _equal_3d(ax, pose)


def plot_scene(pose_world_mm, cameras, title="3D pose and the cameras (world frame)") -> Figure:
    """Left: the pose (J, 3, world mm) with each camera's centre and optical axis (1 m arrow);
    right: the pose alone, close up."""
    pose = np.asarray(pose_world_mm)
    fig = Figure(figsize=(10, 5), layout="constrained")
    room, close = fig.add_subplot(1, 2, 1, projection="3d"), fig.add_subplot(1, 2, 2, projection="3d")
    plot_pose_3d(room, pose)
    for view, camera in enumerate(cameras):
        room.scatter(*camera.translation, color="black", marker="s", s=25)
        room.quiver(*camera.translation, *(camera.rotation[:, 2] * 1000), color="grey")
        room.text(*camera.translation, f" cam {view + 1}", fontsize=8)
    _equal_3d(room, np.concatenate([pose, [camera.translation for camera in cameras]]))
    room.set_title("the room: cameras (squares) and optical axes")
    plot_pose_3d(close, pose)
    close.set_title("the pose, close up (left blue, right red)")
    fig.suptitle(title)
    return fig


def plot_predictions(evaluation, samples=None, protocol="p1",
                     title="Predicted (colour) and true (grey) poses, root-relative") -> Figure:
    """3D poses of some evaluated samples; by default the best, the median and the worst frame."""
    if samples is None:
        order = np.argsort(evaluation.per_frame(protocol), kind="stable")
        samples, names = [order[0], order[len(order) // 2], order[-1]], ["best", "median", "worst"]
    else:
        names = [""] * len(samples)
    fig = Figure(figsize=(3.4 * len(samples), 3.8), layout="constrained")
    for column, (sample, name) in enumerate(zip(samples, names)):
        ax = fig.add_subplot(1, len(samples), column + 1, projection="3d")
        plot_pose_3d(ax, evaluation.targets[sample], colour=TRUTH_COLOUR)
        plot_pose_3d(ax, evaluation.predictions[sample])
        _equal_3d(ax, np.concatenate([evaluation.targets[sample], evaluation.predictions[sample]]))
        error = evaluation.per_frame(protocol)[sample]
        ax.set_title(f"{name} {evaluation.subjects[sample]} {evaluation.recordings[sample]} "
                     f"#{evaluation.frame_index[sample]}\n{protocol.upper()} {error:.1f} mm".strip(), fontsize=8)
    fig.suptitle(title)
    return fig


def plot_frames_per_action(summary: dict, title="Frames per subject and action") -> Figure:
    """Heat map of {subject: {action: frames}} with the counts written in the cells."""
    subjects = list(summary)
    present = {action for per_subject in summary.values() for action in per_subject}
    actions = [a for a in skeleton.ACTIONS if a in present] + sorted(present - set(skeleton.ACTIONS))
    counts = np.array([[summary[s].get(a, 0) for a in actions] for s in subjects])
    fig = Figure(figsize=(max(6, 0.55 * len(actions) + 2), 0.45 * len(subjects) + 2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(actions)), actions, rotation=45, ha="right")
    ax.set_yticks(range(len(subjects)), subjects)
    for (row, column), value in np.ndenumerate(counts):
        text = f"{value / 1000:.1f}k" if value >= 10000 else str(value)
        ax.text(column, row, text, ha="center", va="center", fontsize=7,
                color="white" if value > counts.max() * 0.6 else "black")
    ax.set_xlabel("action")
    ax.set_ylabel("subject")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="frames")
    return fig


def plot_normalization(normalization, title="2D normalisation statistics (training subjects)") -> Figure:
    """Mean and standard deviation in pixels per joint, one line per view, x and y panels."""
    fig = Figure(figsize=(10, 6), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    joints = np.arange(skeleton.NUM_JOINTS)
    for row, (name, values) in enumerate((("mean", normalization.mean), ("standard deviation", normalization.std))):
        for column, coordinate in enumerate("xy"):
            ax = axes[row, column]
            for view in range(values.shape[0]):
                ax.plot(joints, values[view, :, column], marker="o", markersize=3, label=f"camera {view + 1}")
            ax.set_title(f"{name} of {coordinate}")
            ax.set_ylabel(f"{name} of {coordinate} (px)")
    for ax in axes[1]:
        ax.set_xticks(joints, skeleton.JOINT_NAMES, rotation=60, ha="right")
        ax.set_xlabel("joint")
    axes[0, 0].legend()
    fig.suptitle(title)
    return fig


def plot_training_curves(history: list, title="Training: MPJPE per epoch") -> Figure:
    """Train and test (and validation) MPJPE in mm per epoch, the best epoch marked."""
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    epochs = [record["epoch"] for record in history]
    for name, style in (("train", "-o"), ("test", "-s"), ("val", "-^")):
        values = [record.get(f"{name}_mpjpe") for record in history]
        if history and all(value is not None for value in values):
            ax.plot(epochs, values, style, markersize=3, label=f"{name} MPJPE")
    if history:
        best = history[-1]["best_epoch"]
        ax.axvline(best, color="grey", linestyle=":", label=f"best epoch ({best}): {history[-1]['best_metric']:.1f} mm")
        values = [v for r in history for k, v in r.items() if k.endswith("_mpjpe") and np.isfinite(v)]
        if values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")
        ax.legend()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("MPJPE (mm)")
    ax.set_title(title)
    return fig


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


class LiveCurves:
    """A training callback that redraws the train/test curves in place after every epoch.

    Pass it in ``train.train(..., callbacks=[live])``. Outside IPython it only records the
    history (``live.history``), so it never fails headless.
    """

    def __init__(self, history=(), title="Training: MPJPE per epoch (live)"):
        self.history = [dict(record) for record in history]
        self.title = title
        self.figure = None
        self._handle = None

    def __call__(self, record: dict) -> None:
        self.history.append(dict(record))
        self.figure = plot_training_curves(self.history, title=self.title)
        if not _in_notebook():
            return
        from IPython.display import display

        if self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)


def plot_per_action(results: dict, published: dict = None,
                    title="Error per action on the test subjects") -> Figure:
    """Grouped bars of {"p1": {action: mm, "mean": mm}, "p2": {...}}; `published` ({"p1": mm,
    ...}) adds dashed reference lines, labelled as the paper's figures: pass it only for real data."""
    actions = actions_then_mean(results)
    protocols = list(results)
    width = 0.8 / len(protocols)
    fig = Figure(figsize=(max(6, 0.5 * len(actions) + 2), 4), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(actions))
    for index, protocol in enumerate(protocols):
        values = [results[protocol][action] for action in actions]
        bars = ax.bar(positions + (index - (len(protocols) - 1) / 2) * width, values, width,
                      label=PROTOCOL_LABELS.get(protocol, protocol), color=PROTOCOL_COLOURS.get(protocol))
        ax.bar_label(bars, labels=[""] * (len(values) - 1) + [f"{values[-1]:.1f}"], fontsize=7)  # the mean
    for protocol, value in (published or {}).items():
        ax.axhline(value, color=PROTOCOL_COLOURS.get(protocol, "black"), linestyle="--", linewidth=1,
                   label=f"published {protocol.upper()}: {value:.1f} mm (Human3.6M, CPN 2D)")
    ax.axvline(len(actions) - 1.5, color="black", linewidth=0.8)
    ax.set_xticks(positions, [a if a != "mean" else "Mean" for a in actions], rotation=45, ha="right")
    ax.set_xlabel("action")
    ax.set_ylabel("error (mm)")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_per_joint(evaluation, protocols=("p1", "p2"), title="Error per joint on the test subjects") -> Figure:
    """Horizontal bars of the mean error (mm) of every joint under each protocol."""
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(skeleton.NUM_JOINTS)
    height = 0.8 / len(protocols)
    for index, protocol in enumerate(protocols):
        values = list(evaluation.per_joint(protocol).values())
        ax.barh(positions + (index - (len(protocols) - 1) / 2) * height, values, height,
                label=PROTOCOL_LABELS.get(protocol, protocol), color=PROTOCOL_COLOURS.get(protocol))
    ax.set_yticks(positions, skeleton.JOINT_NAMES)
    ax.invert_yaxis()
    ax.set_xlabel("mean error (mm)")
    ax.set_ylabel("joint")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_error_distribution(evaluation, protocols=("p1", "p2"),
                            title="Distribution of the per-frame error") -> Figure:
    """Histogram and cumulative distribution of the per-frame error (mean over joints, mm)."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    histogram, cumulative = fig.subplots(1, 2)
    for protocol in protocols:
        errors = np.sort(evaluation.per_frame(protocol))
        label, colour = PROTOCOL_LABELS.get(protocol, protocol), PROTOCOL_COLOURS.get(protocol)
        histogram.hist(errors, bins=50, alpha=0.6, label=label, color=colour)
        cumulative.plot(errors, np.arange(1, len(errors) + 1) / max(len(errors), 1) * 100, label=label, color=colour)
        cumulative.axvline(np.median(errors), color=colour, linestyle=":", linewidth=1)
    histogram.set_title("histogram")
    histogram.set_xlabel("per-frame error (mm)")
    histogram.set_ylabel("frames")
    cumulative.set_title("cumulative distribution (dotted: median)")
    cumulative.set_xlabel("per-frame error (mm)")
    cumulative.set_ylabel("frames with a smaller error (%)")
    histogram.legend()
    fig.suptitle(title)
    return fig

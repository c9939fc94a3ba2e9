"""Figures of the views lab: error against detector noise, what each camera's detector costs, the
input's pixel error per camera and joint, the error on every subset of views, and a rig seen from above."""
import numpy as np
from matplotlib.figure import Figure

from iivformer import skeleton
from iivformer.cameras import camera_ids

METHOD_COLOURS = {"model": "#4c72b0", "triangulation": "#55a868"}


def plot_noise_sweep(sweep: dict, protocol: str = "p1", title="Error against 2D detector noise") -> Figure:
    """{noise px: {method: {"p1", "p2"}}} as one line per method, mm against px."""
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    levels = list(sweep)
    for method, colour in METHOD_COLOURS.items():
        ax.plot(levels, [sweep[level][method][protocol] for level in levels], "-o", color=colour, label=method)
    ax.set_xlabel("detector noise (px, standard deviation per coordinate)")
    ax.set_ylabel(f"{protocol.upper()} (mm)")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_camera_costs(forensics: dict, view_weights=None, protocol: str = "p1",
                      title="What each camera's 2D detector costs") -> Figure:
    """Left: mm gained when one camera's 2D is replaced by the exact projection, per method; right
    (with `view_weights`, one per camera): the model's learned weights of the view average."""
    cameras = list(forensics["cameras"])
    panels = 2 if view_weights is not None else 1
    fig = Figure(figsize=(5 * panels + 1, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels))
    positions = np.arange(len(cameras))
    for index, (method, colour) in enumerate(METHOD_COLOURS.items()):
        gains = [forensics["inputs"][method][protocol] - forensics["cameras"][c][method][protocol] for c in cameras]
        axes[0].bar(positions + (index - 0.5) * 0.4, gains, 0.4, color=colour, label=method)
    axes[0].set_xticks(positions, cameras)
    axes[0].set_xlabel("camera made exact")
    axes[0].set_ylabel(f"{protocol.upper()} gained (mm)")
    axes[0].set_title("error removed by a perfect detector in one camera")
    axes[0].legend()
    if view_weights is not None:
        axes[1].bar(positions, np.asarray(view_weights), color="#8172b2")
        axes[1].set_xticks(positions, cameras)
        axes[1].set_xlabel("camera")
        axes[1].set_ylabel("weight (no unit)")
        axes[1].set_title("learned weights of the view average")
    fig.suptitle(title)
    return fig


def plot_pixel_error(per_joint, views=None, title="2D input error per camera and joint", rig=None) -> Figure:
    """Heat map of the mean distance (px) of the detections to the exact projections, (V, J), the
    cameras named by their ids in the `rig` (default Human3.6M)."""
    values = np.asarray(per_joint)
    ids = camera_ids(rig)
    labels = [ids[view] for view in (views if views is not None else range(len(values)))]
    fig = Figure(figsize=(9, 0.5 * len(values) + 2.2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Reds", aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(values.shape[1]), skeleton.JOINT_NAMES, rotation=60, ha="right")
    ax.set_yticks(range(len(values)), labels)
    ax.set_xlabel("joint")
    ax.set_ylabel("camera")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="mean error (px)")
    return fig


def plot_subsets(subsets: dict, protocol: str = "p1", title="Error on every subset of views") -> Figure:
    """Grouped bars, one group per subset of views (by camera index), the model and triangulation."""
    names = list(subsets)
    positions = np.arange(len(names))
    fig = Figure(figsize=(max(7, 0.6 * len(names) + 2), 4), layout="constrained")
    ax = fig.subplots()
    for index, (method, colour) in enumerate(METHOD_COLOURS.items()):
        values = [subsets[name][method][protocol] if method in subsets[name] else np.nan for name in names]
        ax.bar(positions + (index - 0.5) * 0.4, values, 0.4, color=colour, label=method)
    ax.set_xticks(positions, names, rotation=45, ha="right")
    ax.set_xlabel("views (camera indices)")
    ax.set_ylabel(f"{protocol.upper()} (mm)")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_rig_from_above(rig, paths: dict = None, title=None) -> Figure:
    """A rig's cameras seen from above (position, viewing direction, id) with the floor paths of people
    {label: (F, 2) or (F, >=2) world positions in mm}, e.g. the root of each recording."""
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax = fig.subplots()
    for label, path in (paths or {}).items():
        path = np.asarray(path, dtype=np.float64)[:, :2] / 1000
        ax.plot(path[:, 0], path[:, 1], lw=1.5, label=label)
        ax.plot(*path[0], "o", color=ax.lines[-1].get_color(), ms=4)
    centre = rig.capture_centre() / 1000
    for camera in rig.cameras:
        x, y = camera.translation[:2] / 1000
        direction = camera.rotation[:2, 2] / max(np.linalg.norm(camera.rotation[:2, 2]), 1e-9)
        ax.annotate("", xy=(x + 0.8 * direction[0], y + 0.8 * direction[1]), xytext=(x, y),
                    arrowprops=dict(arrowstyle="->", color="#333333", lw=1.5))
        ax.plot(x, y, "s", color="#333333", ms=7)
        ax.annotate(camera.id, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.plot(*centre[:2], "+", color="#c44e52", ms=12, mew=2, label="where the cameras look")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"Rig {rig.name} from above")
    return fig

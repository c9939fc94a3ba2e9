"""The `iivformer` command: a thin layer over the same functions the notebooks call.

    iivformer synth    --out data/synthetic/small --preset tiny|small|full --seed 0 [--detector_noise PX] [--rig R]
    iivformer import-bvh FILE... --out DIR [--rig R | --subject S9] [--action NAME[,NAME...]] [--mapping F]
                       [--units auto|m|cm|mm|in] [--up y|z] [--detector_noise PX] [--seed N]
    iivformer rig      RIG [--out rig.json] [--units mm|cm|m|in] [--up auto|+z|-y|...]
    iivformer check    --data_3d F --data_2d F
    iivformer train    --data_3d F --data_2d F [--profile ci|default|paper] --batch_size N --epochs N --lr X ...
                       [--precision fp32|bf16] [--compile]
    torchrun --nproc_per_node N -m iivformer train ...    (N processes, one model: see iivformer.train)
    iivformer evaluate --data_3d F --data_2d F --subjects '["S9", "S11"]' --model_path cpn.pth --protocol p1|p2|both
                       [--precision fp32|bf16] [--compile]
    iivformer predict  --model_path CKPT --keypoints FILE --out FILE [--format h36m17|coco17] [--rig FILE]
    iivformer export   --model_path CKPT --out FILE [--format state_dict|torchscript|onnx]
    iivformer cite

The training and evaluation flags are those of the published main.py and evaluate.py; their
defaults are the published recipe (iivformer.config), and --profile starts from a profile instead.
Bad input ends with one line `error: ...` on stderr and a non-zero exit status.
"""
import argparse
import os
import sys
from pathlib import Path

from iivformer import distributed, provenance, skeleton, workbench
from iivformer.archives import SYNTHETIC_FOLDER, find_archives, load_archives, read_rig
from iivformer.baselines import METHODS, evaluate_method
from iivformer.cameras import parse_views
from iivformer.config import PROFILES, ModelConfig, TrainConfig, training_config
from iivformer.errors import IIVFormerError, printable
from iivformer.files import check_distinct, check_writable, write_json
from iivformer.npz import DEFAULT_MAX_GB, LIMIT_VARIABLE
from iivformer.rig import UNITS_MM, UP_AXES, from_anipose, load_rig, save_rig

_TRAIN_SETTINGS = ("batch_size", "epochs", "lr", "seed", "device", "embed_dim_ratio", "depth", "num_heads",
                   "view_dropout", "precision", "compile")
_PUBLISHED = {**TrainConfig().to_dict(), **ModelConfig().to_dict()}  # for the help texts


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"error: {self.prog}: {message}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _seed(text):
    value = _positive_int(text) if text.strip() != "0" else 0
    if value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be below 2**32, got {value}")
    return value


def _published(name: str) -> str:
    return f"(published: {_PUBLISHED[name]})"


def _archives(args) -> tuple:
    """The archive pair from the flags, or the default one found in the data folder."""
    if args.data_3d and args.data_2d:
        return args.data_3d, args.data_2d
    if args.data_3d or args.data_2d:
        raise IIVFormerError("give both --data_3d and --data_2d, or neither to use the archives in data/")
    folder = workbench.data_dir()
    found = find_archives(folder)
    if found is None:
        raise IIVFormerError(f"no archives in {folder}: link the Human3.6M archives there (see data/README.md) "
                             "or make the synthetic default with `iivformer synth`")
    if distributed.rank() == 0:  # in a multi-process run, rank 0 speaks for all
        print(f"using the {found[2]} archives {found[0]} and {found[1]}", file=sys.stderr)
    return found[0], found[1]


def _add_data_flags(parser):
    parser.add_argument("--data_3d", help="3D archive (VideoPose3D format); default: found in data/")
    parser.add_argument("--data_2d", help="2D archive (VideoPose3D format); default: found in data/")
    parser.add_argument("--max_archive_gb", type=_positive_float,
                        help=f"largest archive content read, in GiB (default {DEFAULT_MAX_GB}; sets {LIMIT_VARIABLE})")


def _apply_limits(args) -> None:
    if getattr(args, "max_archive_gb", None):
        os.environ[LIMIT_VARIABLE] = f"{args.max_archive_gb:f}"


def cmd_synth(args):
    from iivformer import synthetic

    options = {name: value for name, value in (("seed", args.seed), ("detector_noise", args.detector_noise))
               if value is not None}
    synthetic.check_detector_noise(options.get("detector_noise", 0))
    out = Path(args.out) if args.out else workbench.data_dir() / SYNTHETIC_FOLDER / args.preset
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    if not existing.is_dir():
        raise IIVFormerError(f"--out {out}: {existing} is not a folder")
    if existing == out:
        for name in ("data_3d_h36m.npz", "data_2d_h36m_synthetic.npz"):
            check_writable(out / name, "--out")
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise IIVFormerError(f"--out {out}: the folder {existing} is not writable")
    rig = load_rig(args.rig) if args.rig else None
    if rig is not None:
        print(rig.describe())
    path_3d, path_2d = synthetic.write_dataset(out, preset=args.preset, rig=rig, **options)
    print(f"wrote {path_3d}\nwrote {path_2d}")
    print(load_archives(path_3d, path_2d).describe())


def cmd_rig(args):
    """Read (or import) a rig, check it, describe it, and write it in the rig file format."""
    if args.out:
        check_writable(args.out, "--out")
        check_distinct({"--out": args.out}, {"RIG": args.rig})
    if str(args.rig).lower().endswith(".toml"):
        rig = from_anipose(args.rig, units=args.units or "mm", up=args.up or "auto")
    elif args.units or args.up:
        raise IIVFormerError("--units and --up apply to an anipose calibration.toml; a rig file is in mm, Z up")
    else:
        rig = load_rig(args.rig)
    print(rig.describe())
    if args.out:
        save_rig(rig, args.out)
        print(f"wrote {args.out}")


def cmd_check(args):
    path_3d, path_2d = _archives(args)
    print(load_archives(path_3d, path_2d).describe())
    print("ok")


def cmd_train(args):
    from iivformer import train
    from iivformer.prepare import prepare

    val_subjects = tuple(args.val_subjects.split(",")) if args.val_subjects else ()
    unknown = [s for s in val_subjects if s not in skeleton.TRAIN_SUBJECTS]
    if unknown:
        raise IIVFormerError(f"--val_subjects: {', '.join(unknown)} not among the training subjects "
                             f"{', '.join(skeleton.TRAIN_SUBJECTS)}")
    settings = {name: getattr(args, name) for name in _TRAIN_SETTINGS}
    select_on = "val" if val_subjects else None
    config = training_config(args.profile, select_on=select_on, **settings)  # the flags checked before any data
    path_3d, path_2d = _archives(args)
    rig = read_rig(path_2d)
    views = parse_views(args.views, rig) if args.views else None
    if views is None and rig is not None:  # every camera of the rig: the model takes as many views
        views = list(range(len(rig)))
    if views is not None:
        config = training_config(args.profile, select_on=select_on, views=views, **settings)
    train.check_output_paths(args.model_path, args.log, {"--data_3d": path_3d, "--data_2d": path_2d})
    train_subjects = tuple(s for s in skeleton.TRAIN_SUBJECTS if s not in val_subjects)
    prepared = prepare(path_3d, path_2d, train_subjects=train_subjects, val_subjects=val_subjects, views=views)
    history = train.train(config, prepared, checkpoint_path=args.model_path, log_path=args.log,
                          resume=args.resume)
    best = min(history, key=lambda record: record.get(f"{config.select_on}_mpjpe", float("inf")))
    if distributed.rank() == 0:
        print(f"best epoch {best['epoch']}: test MPJPE {best['test_mpjpe']:.2f} mm; checkpoint {args.model_path}")


def cmd_evaluate(args):
    from iivformer import evaluate, tables

    subjects = evaluate.parse_subjects(args.subjects)
    protocols = evaluate.PROTOCOLS if args.protocol == "both" else (args.protocol,)
    if args.json:
        check_writable(args.json, "--json")
    path_3d, path_2d = _archives(args)
    views = parse_views(args.views, read_rig(path_2d)) if args.views else None
    model_path = args.model_path if args.method == "model" else None
    check_distinct({"--json": args.json}, {"--model_path": model_path, "--data_3d": path_3d, "--data_2d": path_2d})
    if args.view_subsets:
        return _evaluate_subsets(args, path_3d, path_2d, subjects)
    if args.method == "model":
        result = evaluate.evaluate_checkpoint(args.model_path, path_3d, path_2d, subjects, device=args.device,
                                              views=views, precision=args.precision or "fp32",
                                              compile=bool(args.compile))
    else:
        result = evaluate_method(args.method, path_3d, path_2d, subjects, views=views)
    results = result.results(protocols)
    print(tables.format_table(results))
    published = provenance.published_reference(result.provenance)
    for protocol in protocols:
        line = f"{protocol}: mean over {len(results[protocol]) - 1} actions {results[protocol]['mean']:.2f} mm"
        if published:
            line += f" (published: {published[protocol]:.1f} mm, {published['reported']})"
        print(line)
    if args.json:
        write_json(args.json, result.summary(protocols))
        print(f"wrote {args.json}")


def _evaluate_subsets(args, path_3d, path_2d, subjects):
    from iivformer import subsets, tables

    if args.method != "model" or args.views:
        raise IIVFormerError("--view_subsets all evaluates the model and triangulation on every subset: "
                             "give neither --method nor --views with it")
    result = subsets.evaluate_subsets(args.model_path, path_3d, path_2d, subjects, device=args.device)
    print(tables.subsets_table(result["subsets"]))
    for method in ("model", "triangulation"):
        worse, cases = subsets.added_view_hurts(result["subsets"], method)
        print(f"{method}: adding a view made P1 worse in {worse} of {cases} cases")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")


def cmd_export(args):
    from iivformer.export import card_path, export_model

    export_model(args.model_path, args.out, format=args.format)
    print(f"wrote {args.out}\nwrote {card_path(args.out)}")


def cmd_cite(args):
    print(provenance.BIBTEX)


def cmd_import_bvh(args):
    from iivformer import mocap

    rig = load_rig(args.rig) if args.rig else None
    mapping = mocap.load_mapping(args.mapping) if args.mapping else None
    actions = args.action.split(",") if args.action else None
    options = {name: value for name, value in (("seed", args.seed), ("detector_noise", args.detector_noise))
               if value is not None}
    path_3d, path_2d, lines = mocap.import_bvh(
        args.files, args.out, rig=rig, subject=args.subject, actions=actions, mapping=mapping, units=args.units,
        up=args.up, **options)
    print("\n".join(lines))
    print(f"wrote {path_3d}\nwrote {path_2d}")
    print(load_archives(path_3d, path_2d).describe())


def _add_import_bvh_command(commands):
    from iivformer.mocap import UNITS, UP_AXES

    bvh = commands.add_parser("import-bvh", help="motion capture (BVH files) as archives, projected through a rig")
    bvh.add_argument("files", nargs="+", metavar="FILE", help="BVH recordings")
    bvh.add_argument("--out", required=True, help="folder for data_3d_h36m.npz and data_2d_h36m_mocap.npz")
    bvh.add_argument("--rig", help="the cameras: a rig JSON file, an anipose calibration.toml or h36m:S9 "
                                   "(default: the Human3.6M cameras of --subject)")
    bvh.add_argument("--subject", default="S9", help="the subject the recordings are filed under (default: S9)")
    bvh.add_argument("--action", help="the action of every file, or one per file separated by commas "
                                      "(default: Walking or Hopping for the CMU clips, else the file's name)")
    bvh.add_argument("--mapping", help="JSON file naming the BVH joint of each of the 17 joints (see "
                                       "iivformer.mocap; default: the CMU skeleton)")
    bvh.add_argument("--units", choices=["auto", *UNITS], default="auto",
                     help="the file's length unit (default: auto, from the skeleton's standing height)")
    bvh.add_argument("--up", choices=list(UP_AXES), default="y", help="the file's axis pointing up (default: y)")
    bvh.add_argument("--detector_noise", type=_non_negative_float,
                     help="2D detector error in pixels (default: 0, exact projections)")
    bvh.add_argument("--seed", type=_seed, help="placement in the room and detector error (default: 0)")
    bvh.set_defaults(run=cmd_import_bvh)


def _add_train_command(commands):
    fit = commands.add_parser("train", help="train IIVFormer (flags of the published main.py)",
                              description="Train IIVFormer (flags of the published main.py).\n\n" + distributed.HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data_flags(fit)
    fit.add_argument("--profile", choices=list(PROFILES),
                     help="start from a profile's settings (flags override them); default: the published recipe")
    fit.add_argument("--batch_size", type=_positive_int, help=_published("batch_size"))
    fit.add_argument("--epochs", type=_positive_int, help=_published("epochs"))
    fit.add_argument("--lr", type=_positive_float, help=_published("lr"))
    fit.add_argument("--seed", type=_seed, help=_published("seed"))
    fit.add_argument("--model_path", default="cpn.pth", help="checkpoint to write (default: cpn.pth)")
    fit.add_argument("--log", "--log_file", dest="log", default="cpn.log",
                     help="training log (default: cpn.log); under torchrun write --log_file, as torchrun's "
                          "own parser takes --log for an abbreviation of its --log-dir")
    fit.add_argument("--device", choices=["auto", "cuda", "cpu"], help="default: auto (CUDA when present)")
    fit.add_argument("--resume", action="store_true", help="continue from the checkpoint at --model_path")
    fit.add_argument("--val_subjects", help="pick the best epoch on these training subjects (e.g. S8) "
                                            "instead of the test subjects")
    fit.add_argument("--embed_dim_ratio", type=_positive_int, help=_published("embed_dim_ratio"))
    fit.add_argument("--depth", type=_positive_int, help=_published("depth"))
    fit.add_argument("--num_heads", type=_positive_int, help=_published("num_heads"))
    fit.add_argument("--views", help="cameras the model sees, as indices (0,1,3) or ids (54138969,...); default: all")
    fit.add_argument("--view_dropout", type=_non_negative_float,
                     help="probability of leaving each view out of a training sample, so that the model "
                          "accepts any subset of its views (default: 0)")
    fit.add_argument("--precision", choices=["fp32", "bf16"],
                     help="arithmetic of the training forward pass: fp32 (default) or bf16 autocast (weights, "
                          "optimiser and evaluation stay fp32)")
    fit.add_argument("--compile", action="store_true", default=None,
                     help="torch.compile the model for training (without it, with a warning, where it cannot run)")
    fit.set_defaults(run=cmd_train)


def _add_evaluate_command(commands):
    test = commands.add_parser("evaluate", help="Protocol 1/2 per action (flags of the published evaluate.py)")
    _add_data_flags(test)
    test.add_argument("--subjects", default=str(list(skeleton.TEST_SUBJECTS)).replace("'", '"'))
    test.add_argument("--model_path", default="cpn.pth")
    test.add_argument("--protocol", choices=["p1", "p2", "both"], default="p1")
    test.add_argument("--seed", type=_seed, help="accepted for compatibility; evaluation is deterministic")
    test.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    test.add_argument("--json", help="also write the per-action results and their provenance to this JSON file")
    test.add_argument("--method", choices=METHODS, default="model",
                      help="the trained model (--model_path), or a reference method on the same frames")
    test.add_argument("--views", help="cameras to use, as indices (0,1,3) or ids (54138969,...); default: all")
    test.add_argument("--precision", choices=["fp32", "bf16"],
                      help="the model's forward pass: fp32 (default) or bf16 autocast")
    test.add_argument("--compile", action="store_true", default=None,
                      help="torch.compile the model (without it, with a warning, where it cannot run)")
    test.add_argument("--view_subsets", choices=["all"],
                      help="evaluate the model (trained with --view_dropout) and triangulation on every subset")
    test.set_defaults(run=cmd_evaluate)


def cmd_predict(args):
    from iivformer.predict import output_paths, predict_keypoints
    from iivformer.rig import BUILT_IN_PREFIX

    outputs = output_paths(args.out)
    for path in outputs:
        check_writable(path, "--out")
    rig_file = args.rig if args.rig and not args.rig.startswith(BUILT_IN_PREFIX) else None
    check_distinct({"--out": outputs[0], "--out (its .json)": outputs[1]},
                   {"--model_path": args.model_path, "--keypoints": args.keypoints, "--rig": rig_file})
    result = predict_keypoints(args.model_path, args.keypoints, rig=args.rig, device=args.device,
                               format=args.format, min_score=args.min_score or 0.0)
    result.save(args.out)
    cameras = ", ".join(map(printable, result.camera_ids))
    if result.provenance["keypoints"] and result.provenance["cameras_checked"].startswith("not checked"):
        print(f"note: {printable(args.keypoints)} names no camera_ids; its views are taken to be the model's "
              f"cameras {cameras}, in this order", file=sys.stderr)
    print(f"lifted {len(result)} frames from the cameras {cameras}")
    left_out = result.provenance["frames_with_views_left_out"]
    if left_out:
        print(f"{left_out} frames left out views with missing joints (views_used says which)")
    if result.root is not None:
        fitted = int((result.root_views == 1).sum())
        print(f"root: the pelvis triangulated with the rig {printable(args.rig)}"
              + (f" ({fitted} frames from one view only, placed from the predicted pose)" if fitted else ""))
    print(f"wrote {outputs[0]} and {outputs[1]}")


def _add_predict_command(commands):
    from iivformer.keypoints import FORMATS

    lift = commands.add_parser("predict", help="3D poses from your own 2D keypoints (.npz or .json, in pixels)")
    lift.add_argument("--model_path", required=True, help="a checkpoint written by `iivformer train`")
    lift.add_argument("--keypoints", required=True,
                      help="keypoints (frames, views, 17, 2 or 3) in pixels: an .npz (keypoints, optional scores "
                           "and camera_ids) or a JSON of the same")
    lift.add_argument("--out", required=True, help="FILE.npz (or FILE.json, or FILE): writes FILE.npz and FILE.json")
    lift.add_argument("--format", choices=list(FORMATS), default="h36m17",
                      help="the keypoints' joint order: Human3.6M's 17 (default) or COCO's 17, converted")
    lift.add_argument("--rig", help="the cameras' rig (a rig JSON, an anipose calibration.toml or h36m:S9): "
                                    "also triangulate the absolute root")
    lift.add_argument("--min_score", type=_non_negative_float,
                      help="a keypoint with a confidence at or below this is missing (default: 0)")
    lift.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    lift.set_defaults(run=cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iivformer", description="IIVFormer workbench: multi-view 2D-to-3D human pose lifting")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    synth = commands.add_parser("synth", help="make the synthetic Human3.6M-format dataset")
    synth.add_argument("--out", help="output folder (default: data/synthetic/<preset>)")
    synth.add_argument("--preset", choices=["tiny", "small", "full"], default="small")
    synth.add_argument("--seed", type=_seed, help="default: 0")
    synth.add_argument("--detector_noise", type=_non_negative_float,
                       help="2D detector error in pixels (0: exact projections)")
    synth.add_argument("--rig", help="the cameras: a rig JSON file, an anipose calibration.toml or h36m:S9 "
                                     "(default: each subject's Human3.6M cameras)")
    synth.set_defaults(run=cmd_synth)
    _add_import_bvh_command(commands)

    rig = commands.add_parser("rig", help="check and describe a camera rig; import an anipose calibration.toml")
    rig.add_argument("rig", help="a rig JSON file, an anipose calibration.toml, or h36m:<subject>")
    rig.add_argument("--out", help="write the rig in the project's rig format (JSON) to this file")
    rig.add_argument("--units", choices=list(UNITS_MM), help="calibration.toml: its length unit (default: mm)")
    rig.add_argument("--up", choices=["auto", *UP_AXES],
                     help="calibration.toml: its world axis pointing up, e.g. --up=-y (default: auto, from the cameras)")
    rig.set_defaults(run=cmd_rig)

    check = commands.add_parser("check", help="validate a pair of archives and summarise them")
    _add_data_flags(check)
    check.set_defaults(run=cmd_check)
    _add_train_command(commands)
    _add_evaluate_command(commands)
    _add_predict_command(commands)

    export = commands.add_parser("export", help="write a checkpoint's best weights as a plain state dict, TorchScript "
                                 "or ONNX, with a model card FILE.card.json beside it")
    export.add_argument("--model_path", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--format", choices=["state_dict", "torchscript", "onnx"], default="state_dict",
                        help="state_dict (default): plain weights taking normalised 2D; torchscript, onnx: graphs "
                             "taking pixels (the normalisation included)")
    export.set_defaults(run=cmd_export)

    cite = commands.add_parser("cite", help="print the BibTeX entry of the IIVFormer paper")
    cite.set_defaults(run=cmd_cite)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _apply_limits(args)
        args.run(args)
    except IIVFormerError as error:
        if distributed.rank() == 0 or isinstance(error, distributed.DistributedError):  # the same on every rank
            print(f"error: {printable(error)}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        if distributed.rank() == 0:
            print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

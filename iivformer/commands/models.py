"""The model subcommands: train, evaluate, predict and export (a checkpoint made, measured, used, exported)."""
import argparse
import sys

from iivformer import distributed, provenance, skeleton
from iivformer.archives import read_rig
from iivformer.baselines import METHODS, evaluate_method
from iivformer.cameras import parse_views
from iivformer.commands import flags
from iivformer.config import PROFILES, training_config
from iivformer.errors import IIVFormerError, printable
from iivformer.files import check_distinct, check_writable, write_json

_TRAIN_SETTINGS = ("batch_size", "epochs", "lr", "seed", "device", "embed_dim_ratio", "depth", "num_heads",
                   "view_dropout", "init_from", "precision", "compile")


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
    path_3d, path_2d = flags.archives(args)
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


def _add_train_command(commands):
    fit = commands.add_parser("train", help="train IIVFormer (flags of the published main.py)",
                              description="Train IIVFormer (flags of the published main.py).\n\n" + distributed.HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_data_flags(fit)
    fit.add_argument("--profile", choices=list(PROFILES),
                     help="start from a profile's settings (flags override them); default: the published recipe")
    fit.add_argument("--batch_size", type=flags.positive_int, help=flags.published("batch_size"))
    fit.add_argument("--epochs", type=flags.positive_int, help=flags.published("epochs"))
    fit.add_argument("--lr", type=flags.positive_float, help=flags.published("lr"))
    fit.add_argument("--seed", type=flags.seed, help=flags.published("seed"))
    fit.add_argument("--model_path", default="cpn.pth", help="checkpoint to write (default: cpn.pth)")
    fit.add_argument("--log", "--log_file", dest="log", default="cpn.log",
                     help="training log (default: cpn.log); under torchrun write --log_file, as torchrun's "
                          "own parser takes --log for an abbreviation of its --log-dir")
    fit.add_argument("--device", choices=["auto", "cuda", "cpu"], help="default: auto (CUDA when present)")
    fit.add_argument("--resume", action="store_true", help="continue from the checkpoint at --model_path")
    fit.add_argument("--val_subjects", help="pick the best epoch on these training subjects (e.g. S8) "
                                            "instead of the test subjects")
    fit.add_argument("--embed_dim_ratio", type=flags.positive_int, help=flags.published("embed_dim_ratio"))
    fit.add_argument("--depth", type=flags.positive_int, help=flags.published("depth"))
    fit.add_argument("--num_heads", type=flags.positive_int, help=flags.published("num_heads"))
    fit.add_argument("--views", help="cameras the model sees, as indices (0,1,3) or ids (54138969,...); default: all")
    fit.add_argument("--view_dropout", type=flags.non_negative_float,
                     help="probability of leaving each view out of a training sample, so that the model "
                          "accepts any subset of its views (default: 0)")
    fit.add_argument("--init_from", metavar="CKPT",
                     help="start from this checkpoint's best weights (fine-tuning: same model settings and "
                          "normalisation); default: fresh seeded weights")
    fit.add_argument("--precision", choices=["fp32", "bf16"],
                     help="arithmetic of the training forward pass: fp32 (default) or bf16 autocast (weights, "
                          "optimiser and evaluation stay fp32)")
    fit.add_argument("--compile", action="store_true", default=None,
                     help="torch.compile the model for training (without it, with a warning, where it cannot run)")
    fit.set_defaults(run=cmd_train)


def cmd_evaluate(args):
    from iivformer import evaluate, tables

    subjects = evaluate.parse_subjects(args.subjects)
    protocols = evaluate.PROTOCOLS if args.protocol == "both" else (args.protocol,)
    if args.json:
        check_writable(args.json, "--json")
    path_3d, path_2d = flags.archives(args)
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


def _add_evaluate_command(commands):
    test = commands.add_parser("evaluate", help="Protocol 1/2 per action (flags of the published evaluate.py)")
    flags.add_data_flags(test)
    test.add_argument("--subjects", default=str(list(skeleton.TEST_SUBJECTS)).replace("'", '"'))
    test.add_argument("--model_path", default="cpn.pth")
    test.add_argument("--protocol", choices=["p1", "p2", "both"], default="p1")
    test.add_argument("--seed", type=flags.seed, help="accepted for compatibility; evaluation is deterministic")
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
    lift.add_argument("--min_score", type=flags.non_negative_float,
                      help="a keypoint with a confidence at or below this is missing (default: 0)")
    lift.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    lift.set_defaults(run=cmd_predict)


def cmd_export(args):
    from iivformer.export import card_path, export_model

    export_model(args.model_path, args.out, format=args.format)
    print(f"wrote {args.out}\nwrote {card_path(args.out)}")


def add_commands(commands) -> None:
    """train, evaluate, predict and export, in this order, to the subcommands `commands`."""
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

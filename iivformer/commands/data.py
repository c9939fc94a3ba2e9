"""The data subcommands: synth, import-bvh, rig and check (archives and camera rigs)."""
import os
from pathlib import Path

from iivformer import workbench
from iivformer.archives import SYNTHETIC_FOLDER, load_archives
from iivformer.commands import flags
from iivformer.errors import IIVFormerError
from iivformer.files import check_distinct, check_writable
from iivformer.rig import UNITS_MM, UP_AXES, from_anipose, load_rig, save_rig


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
    bvh.add_argument("--detector_noise", type=flags.non_negative_float,
                     help="2D detector error in pixels (default: 0, exact projections)")
    bvh.add_argument("--seed", type=flags.seed, help="placement in the room and detector error (default: 0)")
    bvh.set_defaults(run=cmd_import_bvh)


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
    path_3d, path_2d = flags.archives(args)
    print(load_archives(path_3d, path_2d).describe())
    print("ok")


def add_commands(commands) -> None:
    """synth, import-bvh, rig and check, in this order, to the subcommands `commands`."""
    synth = commands.add_parser("synth", help="make the synthetic Human3.6M-format dataset")
    synth.add_argument("--out", help="output folder (default: data/synthetic/<preset>)")
    synth.add_argument("--preset", choices=["tiny", "small", "full"], default="small")
    synth.add_argument("--seed", type=flags.seed, help="default: 0")
    synth.add_argument("--detector_noise", type=flags.non_negative_float,
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
    flags.add_data_flags(check)
    check.set_defaults(run=cmd_check)

"""Write miniature GTA5, Cityscapes and SYNTHIA folders in the official layouts: does my setup work?

    python data_scripts/make_miniature.py --out /tmp/segda_mini [--no-init]

A few small frames of each dataset with the real folder structure, file names and label
encodings (GTA5 palette labels of label ids, one image/label size mismatch; Cityscapes
leftImg8bit/gtFine with labelIds and polygon JSON files; SYNTHIA 16-bit labels), list files for
these subsets, and an init checkpoint with the official DeepLab-v2 keys and random weights
(176 MB; --no-init skips it). Then prepare, check and load them as you would the real data;
the script prints the commands. --out must be a new or empty folder.
"""

import argparse
import sys

from segda.data.miniature import make_miniature


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="new or empty folder (a data root)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-init", action="store_true", help="skip the init checkpoint")
    args = p.parse_args(argv)
    try:
        mini = make_miniature(args.out, seed=args.seed, init=not args.no_init)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    lists = mini.lists
    print(f"wrote miniature datasets under {mini.root}; next:\n"
          f"  python data_scripts/prepare_gta5.py --root {mini.gta5} --list {lists['gta5_train']}\n"
          f"  python data_scripts/prepare_cityscapes.py --root {mini.cityscapes} "
          f"--list train={lists['cityscapes_train']} --list val={lists['cityscapes_val']}\n"
          f"  python data_scripts/prepare_synthia.py --root {mini.synthia} "
          f"--list {lists['synthia_train']}\n"
          f"  python -m segda.doctor --dataset gta5 --root {mini.gta5} --list {lists['gta5_train']}"
          "\n  (and the same for cityscapes and synthia)\n"
          "then train or evaluate with --set " + " --set ".join(
              f"{k}={v}" for k, v in mini.data_overrides().items()))
    if mini.init_checkpoint:
        print(f"init checkpoint (random weights, official keys): {mini.init_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

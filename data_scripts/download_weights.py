"""Download the official init weights and released models, checking their SHA-256.

    python data_scripts/download_weights.py --list
    python data_scripts/download_weights.py deeplab_init_advent [--dir weights]
    python data_scripts/download_weights.py --verify PATH --name deeplab_init_asn
    python data_scripts/download_weights.py --help-for deeplab_init_asn

Files whose name carries a hash (name-f81d91e8.pth) must have a SHA-256 starting with it; a
file that does not is moved to <dir>/rejected/ and not used. Links known to be dead print what
to do instead.
"""

import argparse
import sys

from segda import weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"files to fetch: {', '.join(weights.WEIGHTS)}")
    p.add_argument("--dir", default=str(weights.DEFAULT_DIR), help="weights folder")
    p.add_argument("--list", action="store_true", help="list the known files and their status")
    p.add_argument("--verify", metavar="PATH", help="check a local file (with --name)")
    p.add_argument("--name", help="which known file --verify checks against")
    p.add_argument("--help-for", metavar="NAME", help="print what to do if NAME is unavailable")
    p.add_argument("--force", action="store_true", help="download again even if present")
    args = p.parse_args(argv)
    if args.list:
        for row in weights.status_table():
            print(f"{row['name']:38s} {row['status']:11s} sha256:{row['sha256_prefix']:9s} "
                  f"{row['file']}\n{'':38s} {row['what']}\n{'':38s} {row['url']}")
        return 0
    if args.help_for:
        print(weights.instructions(args.help_for))
        return 0
    if args.verify:
        if args.name not in weights.WEIGHTS:
            p.error(f"--verify needs --name, one of {', '.join(weights.WEIGHTS)}")
        try:
            digest = weights.verify(args.verify, weights.WEIGHTS[args.name].expected_prefix)
        except weights.ChecksumMismatchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"ok: {args.verify} sha256 {digest}")
        return 0
    if not args.names:
        p.error("name a file to fetch, or use --list")
    failed = 0
    for name in args.names:
        if name not in weights.WEIGHTS:
            p.error(f"unknown name {name!r}; --list shows the known files")
        try:
            weights.fetch(name, args.dir, force=args.force)
        except weights.WeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

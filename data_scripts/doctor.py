"""What is present or missing in a dataset folder, and how to fix it (exit 1 on problems).

    python data_scripts/doctor.py --dataset gta5 --root data/GTA5
    python data_scripts/doctor.py --dataset cityscapes --root data/Cityscapes
    python data_scripts/doctor.py --dataset synthia --root data/SYNTHIA

Same as `python -m segda.doctor`.
"""

import sys

from segda.doctor import main

if __name__ == "__main__":
    sys.exit(main())

"""Class shares of the embedded target train split per balance_shift, and their total variation
distance to the source's (first 300 images of each train split)."""
import numpy as np
from segda.data import stats, synthetic
from segda.labels import CLASS_NAMES
N = 300
src = stats.class_frequencies(synthetic.SyntheticStreetScenes("source", "train", synthetic.SyntheticConfig()), N)
rows = []
print("balance_shift,TV_to_source," + ",".join(CLASS_NAMES[c] for c in synthetic.CLASSES_USED))
print("source,0.000," + ",".join(f"{100*src[c]:.1f}" for c in synthetic.CLASSES_USED))
for s in (0.0, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0):
    cfg = synthetic.SyntheticConfig(balance_shift=s)
    f = stats.class_frequencies(synthetic.SyntheticStreetScenes("target", "train", cfg), N)
    tv = 0.5 * np.abs(f - src).sum()
    print(f"{s},{tv:.3f}," + ",".join(f"{100*f[c]:.1f}" for c in synthetic.CLASSES_USED))
# source images do not depend on balance_shift
a = synthetic.render_sample(synthetic.SyntheticConfig(balance_shift=0.0), "source", "train", 5)
b = synthetic.render_sample(synthetic.SyntheticConfig(balance_shift=1.0), "source", "train", 5)
print("# source sample 5 identical at balance_shift 0 and 1:", all(np.array_equal(x, y) for x, y in zip(a, b)))

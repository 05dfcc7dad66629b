"""Run the walk experiments: each job is one `python -m segda train` command, at most two at
a time (the second only while the 1-minute load of everything else is below 1.0), one thread each."""
import os, subprocess, sys, time
from pathlib import Path
ROOT = Path("runs/walk")
SHIFT = {"s0": 0.0, "s0.3": 0.3, "s1": 1.0}
def job(setting, seed, row):
    shift, bn, disc = setting.split("_")
    preset, over = row.split("@")[0], {}
    if "@" in row:
        lam = float(row.split("@")[1])
        if preset == "output_adv_multi":
            over = {"method.lambda_adv_main": lam, "method.lambda_adv_aux": lam / 5}
        else:
            over = {"method.lambda_adv_main": lam}
    over["data.balance_shift"] = SHIFT[shift]
    over["model.bn_mode"] = bn
    if disc.startswith("patch") and preset in ("output_adv_single", "output_adv_multi", "advent"):
        over["method.disc_patch_stride1"] = int(disc[5:])
    if preset != "oracle":
        over["model.init_checkpoint"] = "shipped:embedded_source_pretrain"
    over["run.seed"] = seed
    run_dir = ROOT / setting / f"seed{seed}" / row
    cmd = ["python", "-m", "segda", "train", f"embedded/{preset}", "--run-dir", str(run_dir)]
    for k, v in over.items():
        cmd += ["--set", f"{k}={v}"]
    return run_dir, cmd
C = "s0.3_frozen_patch3"
WALK = ["source_only", "output_adv_single@0.01", "minent", "advent", "output_adv_multi@0.01",
        "feature_adv", "output_adv_single@0.001"]
jobs = [(C, 0, r) for r in WALK]
jobs += [("s0.3_train_official", 0, r) for r in ["source_only_tgt_bn", "source_only",
         "output_adv_single@0.001", "output_adv_single@0.01"]]
jobs += [("s0.3_train_patch3", 0, r) for r in ["output_adv_single@0.001", "output_adv_single@0.01"]]
jobs += [("s0.3_frozen_official", 0, r) for r in ["output_adv_single@0.01", "advent"]]
jobs += [(C, s, r) for s in (1, 2) for r in WALK[:6]]
jobs += [("s0.3_train_official", s, r) for s in (1, 2) for r in ["source_only_tgt_bn", "source_only"]]
jobs += [("s0.3_train_official", 0, "oracle")]
jobs += [("s0_frozen_patch3", 0, r) for r in ["source_only", "output_adv_single@0.01"]]
jobs += [("s1_frozen_patch3", 0, r) for r in ["source_only", "output_adv_single@0.01"]]
jobs += [("s0_train_patch3", 0, r) for r in ["source_only_tgt_bn", "output_adv_single@0.001"]]
env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path.cwd() / "lib"))
running = []
log = open(ROOT / "queue.log", "a")
pending = [job(*j) for j in jobs]
pending = [(d, c) for d, c in pending if not (d / "last.pth").exists()]
while pending or running:
    running = [(p, d, t) for p, d, t in running if p.poll() is None or
               log.write(f"done rc={p.returncode} {time.time()-t:.0f}s {d}\n") is None and log.flush()]
    others = os.getloadavg()[0] - len(running)
    if pending and (not running or (len(running) == 1 and others < 1.0)):
        d, c = pending.pop(0)
        d.mkdir(parents=True, exist_ok=True)
        log.write(f"start {time.strftime('%H:%M:%S')} load={os.getloadavg()[0]:.2f} {' '.join(c)}\n"); log.flush()
        p = subprocess.Popen(c, env=env, stdout=open(d / "stdout.txt", "w"), stderr=subprocess.STDOUT)
        running.append((p, d, time.time()))
        time.sleep(20)
    time.sleep(5)
log.write("queue finished\n")

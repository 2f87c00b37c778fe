#!/usr/bin/env python3
"""Syntax check of ci/github/*.yml (no actionlint here: it does not install from Debian or
PyPI on this machine). Each file must parse as YAML, name itself, have triggers and jobs; every
step must have exactly one of `run`/`uses`; every `run` block must pass `bash -n` (with
${{ ... }} expressions replaced); every script a workflow calls must exist."""
import glob, os, re, subprocess, sys, yaml

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
files = sorted(glob.glob(os.path.join(root, "ci/github/*.yml")))
assert files, "no workflows"
for f in files:
    d = yaml.safe_load(open(f))
    name = os.path.relpath(f, root)
    assert d.get("name"), f"{name}: no name"
    assert d.get(True) or d.get("on"), f"{name}: no triggers"  # YAML 1.1 reads `on` as True
    assert d.get("jobs"), f"{name}: no jobs"
    for jn, j in d["jobs"].items():
        assert j.get("runs-on"), f"{name}: job {jn}: no runs-on"
        for i, s in enumerate(j["steps"]):
            assert ("run" in s) != ("uses" in s), f"{name}: job {jn} step {i}: run xor uses"
            if "run" not in s:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "X", s["run"])
            r = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
            assert r.returncode == 0, f"{name}: job {jn} step {s.get('name', i)}: {r.stderr}"
            for path in re.findall(r"\b((?:scripts|tests)/[\w./-]+\.sh)\b", script):
                assert os.path.isfile(os.path.join(root, path)), f"{name}: {path} does not exist"
    print(f"{name}: ok")

"""The project's own kubelet bodies (testdata/synthetic/) are what
testdata/synthetic/generate.py writes, so that a change to the generator shows up
in them. World: files only."""

import subprocess
import sys

import stack


def test_the_committed_synthetic_bodies_are_the_generators_output(tmp_path):
    subprocess.run([sys.executable, stack.SYNTHETIC / "generate.py", tmp_path], check=True)
    made = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in stack.SYNTHETIC.iterdir() if p.suffix in (".txt", ".json"))
    assert made == committed
    for name in made:
        assert (tmp_path / name).read_bytes() == (stack.SYNTHETIC / name).read_bytes(), (
            f"{name}: run `python3 testdata/synthetic/generate.py` and commit the result"
        )

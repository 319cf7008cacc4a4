"""Writes WORK/data/train-*.h5 from the first 3000 bytes of a real text with `shc prepare`, then
puts one out-of-vocabulary token (300 >= 257) into the middle of one training sequence of
SEQ_LEN tokens, so that exactly one rank reads it (at whichever step that sequence comes up).

usage: make_faulty_shard.py SHC WORK SEQ_LEN"""
import glob
import os
import shutil
import subprocess
import sys

import h5py

shc, work, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
text = os.path.join(work, "text.txt")
with open("/usr/share/common-licenses/GPL-3", "rb") as source, open(text, "wb") as out:
    out.write(source.read(3000))
subprocess.run([shc, "prepare", "--input", text, "--output", os.path.join(work, "data"),
                "--tokenizer", "byte", "--val_fraction", "0"], check=True)
[shard] = glob.glob(os.path.join(work, "data", "train-*.h5"))
with h5py.File(shard, "r+") as f:
    tokens = f["tokens"]
    sequence = (len(tokens) // seq_len) // 2
    tokens[sequence * seq_len + seq_len // 2] = 300

"""What the end-to-end test scripts share: OpenMPI's environment for running as root, and a
byte-level dataset of the GPL-3 text (a real English text every Debian system ships)."""
import os
import subprocess

MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def prepare_gpl3(shc, data):
    """`shc prepare` of the GPL-3 into DATA/train-*.h5 and DATA/val-*.h5 (10 % validation)."""
    subprocess.run([shc, "prepare", "--input", "/usr/share/common-licenses/GPL-3", "--output", data,
                    "--tokenizer", "byte", "--shard_tokens", "20000", "--val_fraction", "0.1"],
                   check=True, capture_output=True)

"""What an exported graph promises its readers: the names of its input and outputs and of its metadata.

Standard library only: `cnnlab.export.runtime` runs a file with these names without importing
torch, and `cnnlab.export.graph` (which needs torch) builds graphs with them.

>>> INPUT_NAME, OUTPUT_NAME, PROBABILITIES_NAME, METADATA_KEY
('pixels', 'output', 'probabilities', 'cnnlab')
"""

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "PROBABILITIES_NAME", "METADATA_KEY"]

INPUT_NAME = "pixels"
OUTPUT_NAME = "output"
PROBABILITIES_NAME = "probabilities"
METADATA_KEY = "cnnlab"

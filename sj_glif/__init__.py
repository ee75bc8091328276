"""sj-glif: the Gated LIF neuron (Yao et al., NeurIPS 2022) for SpikingJelly."""

"""Plain ``nn.Module`` networks, shared by the methods in ``genlab.models``."""

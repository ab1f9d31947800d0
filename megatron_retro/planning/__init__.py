"""Memory / time planning for the paper's model sizes, from models built on the meta device."""

"""Line-movement analysis: one query surface over hot and cold days (`connect`), the relations, charts."""

from warehouse.analysis.surface import connect

__all__ = ["connect"]

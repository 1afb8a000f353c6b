"""Applications on top of the package: the `hf-detr` command (`cli`), `make demo` (`demo`), prediction on image files
(`predict`) and pictures (`visualize`)."""

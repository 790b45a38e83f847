"""Export: every image's best labels (annotation, model, pseudo-label) as TIFFs and COCO."""

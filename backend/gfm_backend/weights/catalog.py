"""The published encoders a GFM user wants, with where they come from and how to cite them.

Sizes and SHA-256 are given only where the publisher states them; otherwise the file is
checked by loading it (the expected architecture and layout) and its hash is recorded on
arrival, so `gfm weights list` shows what was checked.
"""

from __future__ import annotations

from dataclasses import dataclass

GFM_CITATION = ("Mendieta, M., Han, B., Shi, X., Zhu, Y., Chen, C.: Towards Geospatial Foundation "
                "Models via Continual Pretraining. ICCV 2023, pp. 16806-16816")
SWIN_CITATION = ("Liu, Z., Lin, Y., Cao, Y., Hu, H., Wei, Y., Zhang, Z., Lin, S., Guo, B.: Swin "
                 "Transformer: Hierarchical Vision Transformer using Shifted Windows. ICCV 2021")


@dataclass(frozen=True)
class CatalogEntry:
    """One published checkpoint. `url` is a direct download (None: the publisher's page
    needs a browser, so `gfm weights import` takes the downloaded file); `role` is what
    the file serves as (`student`: the GFM encoder to fine-tune; `teacher`: the frozen
    ImageNet-22k model of continual pretraining, also a usable encoder)."""

    name: str
    title: str
    filename: str
    role: str
    architecture: str  # as `identify.architecture_name` calls it
    page: str
    licence: str
    citation: str
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    layout: str = ""

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "title": self.title, "filename": self.filename,
                "role": self.role, "architecture": self.architecture, "url": self.url,
                "page": self.page, "size": self.size, "sha256": self.sha256,
                "licence": self.licence, "citation": self.citation, "layout": self.layout}


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="gfm", title="GFM Swin-B, pretrained on GeoPile", filename="gfm.pth", role="student",
        architecture="Swin-B",
        page="https://1drv.ms/f/s!AkTn76m907OThpRJjH8ehfskbgCLXw?e=ZJreFo",
        licence="Apache-2.0 (github.com/mmendiet/GFM)", citation=GFM_CITATION,
        layout="GFM pretraining checkpoint: student under 'encoder.', teacher under 'teacher.'"),
    CatalogEntry(
        name="swin-b-22k", title="Swin-B ImageNet-22k (the GFM teacher)",
        filename="swin_base_patch4_window7_224_22k.pth", role="teacher", architecture="Swin-B",
        url="https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
            "swin_base_patch4_window7_224_22k.pth",
        page="https://github.com/microsoft/Swin-Transformer",
        licence="MIT (github.com/microsoft/Swin-Transformer)", citation=SWIN_CITATION,
        layout="Microsoft Swin checkpoint"),
    CatalogEntry(
        name="swin-b-22k-timm", title="Swin-B ImageNet-22k, timm's copy (the GFM teacher)",
        filename="model.safetensors", role="teacher", architecture="Swin-B",
        url="https://huggingface.co/timm/swin_base_patch4_window7_224.ms_in22k/resolve/main/"
            "model.safetensors",
        page="https://huggingface.co/timm/swin_base_patch4_window7_224.ms_in22k",
        licence="MIT", citation=SWIN_CITATION, layout="timm Swin checkpoint (safetensors)"),
)


def catalog_entry(name: str) -> CatalogEntry | None:
    return next((e for e in CATALOG if e.name == name), None)

"""Visual question answering: question and image encoders fused at the token level into a GPT-2 decoder."""

from transformers import AutoConfig, AutoModel

from vqa.model.configuration import VQAConfig
from vqa.model.modeling import VQAModel, VQAModelOutput
from vqa.model.processing import VQACollator, VQAProcessor

AutoConfig.register(VQAConfig.model_type, VQAConfig)
AutoModel.register(VQAConfig, VQAModel)

__all__ = ["VQACollator", "VQAConfig", "VQAModel", "VQAModelOutput", "VQAProcessor"]

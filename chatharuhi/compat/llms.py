"""ChatHaruhi's ``llm=`` names mapped to this engine's backends.

``openai`` and ``debug`` are backends here. ChatHaruhi's local fine-tuned models (ChatGLM2, Baichuan2,
Qwen) run on the ``transformers`` backend with the same hub ids (a download you ask for). The hosted
Chinese APIs it wrapped with their own SDKs (GLMPro, ERNIE, Spark, Baichuan API) are not built in:
naming one raises ``BackendUnavailable`` with the equivalent OpenAI-compatible setting.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendUnavailable

# name -> (backend, options)
LEGACY_BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("openai", {}),
    "debug": ("debug", {}),
    "ChatGLM2GPT": ("transformers", {"model": "THUDM/chatglm2-6b", "trust_remote_code": True,
                                     "adapters": {"haruhi-fusion": "silk-road/Chat-Haruhi-Fusion_B"},
                                     "adapter": "haruhi-fusion"}),
    "BaiChuan2GPT": ("transformers", {"model": "baichuan-inc/Baichuan2-13B-Chat", "trust_remote_code": True,
                                      "adapters": {"haruhi-fusion": "silk-road/Chat-Haruhi-Fusion_Baichuan2_13B"},
                                      "adapter": "haruhi-fusion"}),
    "Qwen118k2GPT": ("transformers", {"model": "Qwen/Qwen-1_8B-Chat", "trust_remote_code": True}),
    "qwen118k_raw": ("transformers", {"model": "Qwen/Qwen-1_8B-Chat", "trust_remote_code": True}),
}

# name -> what the wrapped SDK was, and the OpenAI-compatible setting that replaces it
HOSTED_APIS: dict[str, tuple[str, str]] = {
    "GLMPro": ("Zhipu AI's chatglm_pro through the zhipuai SDK",
               "llm='openai', base_url='https://open.bigmodel.cn/api/paas/v4', model='glm-4', api_key=<Zhipu key>"),
    "ernie3.5": ("Baidu ERNIE-Bot through the erniebot SDK",
                 "llm='openai', base_url='https://qianfan.baidubce.com/v2', model='ernie-3.5-8k', "
                 "api_key=<Qianfan key>"),
    "ernie4.0": ("Baidu ERNIE-Bot 4 through the erniebot SDK",
                 "llm='openai', base_url='https://qianfan.baidubce.com/v2', model='ernie-4.0-8k', "
                 "api_key=<Qianfan key>"),
    "spark": ("iFlytek Spark through its websocket API",
              "llm='openai', base_url='https://spark-api-open.xf-yun.com/v1', model='generalv3.5', "
              "api_key=<Spark APIPassword>"),
    "BaiChuanAPIGPT": ("Baichuan's hosted API",
                       "llm='openai', base_url='https://api.baichuan-ai.com/v1', model='Baichuan2-Turbo', "
                       "api_key=<Baichuan key>"),
}
HOSTED_APIS["ernie"] = HOSTED_APIS["ernie3.5"]

LEGACY_LLM_NAMES = tuple(sorted({*LEGACY_BACKENDS, *HOSTED_APIS}))


def legacy_backend(name: str) -> tuple[str, dict[str, Any]] | None:
    """(backend name, options) for a ChatHaruhi ``llm=`` name; None when it is not one of them.

    A hosted API ChatHaruhi wrapped raises ``BackendUnavailable`` naming the equivalent setting."""
    if name in LEGACY_BACKENDS:
        backend, options = LEGACY_BACKENDS[name]
        return backend, dict(options)
    if name in HOSTED_APIS:
        what, setting = HOSTED_APIS[name]
        raise BackendUnavailable(f"llm={name!r} was ChatHaruhi's wrapper for {what}; it is not built in here. "
                                 f"The equivalent setting: ChatHaruhi(..., {setting})")
    if "qwen" in name.lower() and "/" not in name:  # ChatHaruhi: any other qwen name is silk-road/<name>
        return "transformers", {"model": f"silk-road/{name}", "trust_remote_code": True}
    return None

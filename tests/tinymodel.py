"""Tiny real models for tests: a BPE tokenizer trained on the test's texts and a 2-layer Llama.

Nothing is mocked: these are ordinary Hugging Face checkpoints saved with ``save_pretrained`` and
loaded back by path, exactly as users load real models.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def corpus() -> list[str]:
    words = ('the a of to and in is it you that he was for on are with as I his they be at one have this from '
             'or had by word but what some we can out other were all there when up use your how said an each '
             'she which do their time if will way about many then them write would like so these her long '
             'make thing see him two has look more day could go come did number sound no most people my over '
             'know water than call first who may down side been now find any new work part take get place '
             'made live where after back little only round man year came show every good me give our under '
             'name very through just form sentence great think say help low line differ turn cause much mean '
             'before move right boy old too same tell does set three want air well also play small end put '
             'home read hand port large spell add even land here must big high such def return print import '
             'class int float list sum solve equation x y z plus minus times equals poem story essay capital '
             'city country river 0 1 2 3 4 5 6 7 8 9 ? ! . , : ; ( ) = + - * /').split()
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 7)]
    return lines + ["<|system|>", "<|user|>", "<|assistant|>"] * 3


def build_tokenizer(path: Path, chat_template: str | None = None, add_bos: bool = True):
    """``add_bos``: the tokenizer puts ``<s>`` in front by itself, as Llama tokenizers do (Qwen's do not)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(path)
    return fast


def build_llama(path, seed: int = 0, hidden: int = 64, layers: int = 2, chat_template: str | None = None,
                add_bos: bool = True) -> Path:
    """Save a tiny random Llama causal LM (with tokenizer) to ``path`` and return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(path, chat_template, add_bos)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    return path

"""hawk as a library: load a Qwen-VL model, then answer with its visual tokens pruned before the language model.

Two calls make the surface, `load` and `HawkModel.generate` (and `HawkModel.loglikelihood` for scoring answers):

>>> from hawk_cli import api
>>> from hawk_cli.synthetic.scenes import heldout_set
>>> scene = heldout_set(1)[0]                  # a generated picture and a question about it (no files needed)
>>> model = api.load("builtin", device="cpu")  # or a hub id, a folder, or your own model + processor
>>> out = model.generate(scene.image, scene.question, ratio=0.8)
>>> scene.question, out.text
('what color is the triangle ?', 'green')
>>> out.stats.visual_tokens, out.stats.visual_tokens_kept
(256, 52)

`ratio` is the fraction of visual tokens removed (0.8 keeps 20 %, 0 keeps all). Greedy decoding is the default
and is exact: the same tokens as the model's own `generate` with the dropped tokens masked out. Sampling and
penalties use transformers' logits processors; a seed makes a sample reproducible:

>>> first = model.generate(scene.image, scene.question, do_sample=True, temperature=1.5, seed=3)
>>> again = model.generate(scene.image, scene.question, do_sample=True, temperature=1.5, seed=3)
>>> first.tokens == again.tokens
True

A list of prompts is one batch (one image, a list of images or None per prompt), answered in order:

>>> outs = model.generate([scene.image, scene.image], ["what color is the triangle ?",
...                                                     "what digit is in the yellow box ?"])
>>> [o.text for o in outs]
['green', '5']

Chat messages (transformers' format; image entries carry a PIL image or a path) work the same way, and so does
the output of your own processor (`inputs=processor(text=..., images=..., return_tensors="pt")`):

>>> chat = [{"role": "user", "content": [{"type": "image", "image": scene.image},
...                                      {"type": "text", "text": scene.question}]}]
>>> model.generate(messages=chat).text
'green'

Harnesses score multiple-choice answers by their likelihood: `loglikelihood` gives the log-probability of an
answer's tokens after the pruned prompt, and whether greedy decoding would write exactly that answer:

>>> right = model.loglikelihood(scene.image, scene.question, "green")
>>> wrong = model.loglikelihood(scene.image, scene.question, "red")
>>> right.greedy, wrong.greedy, right.logprob > wrong.logprob
(True, False, True)

The library never prints, never exits and changes no global state (warnings filters, logging, torch's threads or
random generator); failures raise `hawk_cli.errors.HawkError` subclasses whose message names the problem and the
fix. Head weights and scorers are those of `hawk run`: `scorer="hawk"` (the published method), `"random"`, ...;
`weights=` a head-importance file from `hawk calibrate` or one value per query head.
"""

from hawk_cli.engine.library import Generation, HawkModel, Likelihood, load

__all__ = ["Generation", "HawkModel", "Likelihood", "load"]

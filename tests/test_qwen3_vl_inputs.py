"""Qwen3-VL inputs without torchvision: prompts equal the stock processor's (images, and video with its text
timestamps), video pixels follow the stock video layout, rotary ids split videos per temporal patch, stand-in
processors carry the published ids and bounds, and checkpoint folders load with any image-processor settings."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from tiny_models import QWEN3_FAMILIES, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_class, adapter_for
from hawk_cli.adapters.qwen2_vl.adapter import RopeIndexCache
from hawk_cli.adapters.qwen3_vl.adapter import Qwen3VLAdapter
from hawk_cli.adapters.qwen3_vl.prompts import Qwen3Prompts
from hawk_cli.adapters.qwen3_vl.video import (
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    build_video,
    frame_size,
    frame_timestamps,
    with_timestamps,
)
from hawk_cli.engine.generation import GenerationSettings
from hawk_cli.engine.session import HawkSession
from hawk_cli.errors import ModelError
from hawk_cli.io.requests import Request
from hawk_cli.tasks.benchmark import CONFIG_DIR

# Everything here leans on transformers internals (processor, rope index, auto classes, tower outputs) that
# changed between 5.17 and 5.25: run on the oldest supported release too.
pytestmark = pytest.mark.contract
WRAPPER = "<|vision_start|><|video_pad|><|vision_end|>"


def stock_processor(tokenizer, image_processor):
    """The stock `Qwen3VLProcessor`, minus its torchvision video processor: a subclass whose `__init__` names
    only the image processor and tokenizer, and whose `_process_videos` hands the stock `replace_video_token`
    the grids the stock video processor would produce (its own `smart_resize` over the clip, published video
    bounds) with metadata for frames sampled at `video_fps[i]` frames per second. Pixels are not compared here."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize
    from transformers.processing_utils import ProcessorMixin
    from transformers.video_utils import VideoMetadata

    class WithoutTorchvision(Qwen3VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
            for name in ("image", "video", "vision_start", "vision_end"):
                setattr(self, f"{name}_token_id", tokenizer.convert_tokens_to_ids(getattr(self, f"{name}_token")))
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

        def _process_videos(self, videos, **kwargs):
            grids, metadata = [], []
            for frames, fps in zip(videos, self.video_fps, strict=True):
                height, width = smart_resize(
                    len(frames),
                    frames[0].height,
                    frames[0].width,
                    temporal_factor=2,
                    factor=32,
                    min_pixels=VIDEO_MIN_PIXELS,
                    max_pixels=VIDEO_MAX_PIXELS,
                )
                grids.append([(len(frames) + 1) // 2, height // 16, width // 16])
                metadata.append(
                    VideoMetadata(total_num_frames=len(frames), fps=fps, frames_indices=list(range(len(frames))))
                )
            processed = {"video_grid_thw": torch.tensor(grids), "video_metadata": metadata}
            return processed, [self.replace_video_token(processed, video_idx=i) for i in range(len(videos))]

    processor = WithoutTorchvision(image_processor=image_processor, tokenizer=tokenizer)
    processor.video_processor = types.SimpleNamespace(merge_size=2, temporal_patch_size=2)
    return processor


def stock_collapses_the_video_wrapper() -> bool:
    """transformers 5.25 (and Qwen's own processor) replace the template's wrapped `<|video_pad|>` as a whole;
    5.17 replaces only the pad and leaves an extra `<|vision_start|>`/`<|vision_end|>` around the frames."""
    from transformers import Qwen3VLProcessor

    return "get_text_with_replacements" in Qwen3VLProcessor.__dict__


def stock_inputs(tokenizer, image_processor, rows):
    """rows: (question, images, (frames, fps) or None). The chat text is written here from the template."""
    texts, images, videos = [], [], []
    for question, row_images, video in rows:
        content = [{"type": "image"} for _ in row_images] + ([{"type": "video"}] if video else [])
        messages = [{"role": "user", "content": content + [{"type": "text", "text": question}]}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if video and not stock_collapses_the_video_wrapper():
            text = text.replace(WRAPPER, "<|video_pad|>")  # what newer releases do before replacing
        texts.append(text)
        images.extend(row_images)
        videos.extend([video] if video else [])
    processor = stock_processor(tokenizer, image_processor)
    processor.video_fps = [fps for _, fps in videos]
    return processor(
        text=texts,
        images=images or None,
        videos=[list(frames) for frames, _ in videos] or None,
        padding=True,
        return_tensors="pt",
    )


def test_prompts_equal_the_stock_processor_for_images_and_video():
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor(family="qwen3_vl")
    frames = tuple(random_image(128, 96, seed) for seed in range(5))
    rows = [
        ("how many stars are there ?", (random_image(224, 128, 1), random_image(96, 160, 2)), None),
        ("what color is the circle ?", (), (frames, 2.0)),
        ("what shape is there ?", (random_image(96, 96, 3),), (frames[:2], 4.0)),
    ]
    requests = [
        Request(question, images, video=video[0] if video else (), fps=video[1] if video else 2.0)
        for question, images, video in rows
    ]
    ours = Qwen3Prompts(tokenizer, processor).collate(requests)
    stock = stock_inputs(tokenizer, processor, rows)
    for name in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw", "video_grid_thw"):
        assert torch.equal(getattr(ours, name), stock[name]), name
    assert torch.equal(ours.pixel_values, stock["pixel_values"])
    assert ours.second_per_grid_ts is None
    second_row = tokenizer.decode(ours.input_ids[1][ours.attention_mask[1].bool()])
    assert second_row.count("<|vision_start|>") == 3 == second_row.count("<|vision_end|>")  # one pair per patch


def test_pixels_finished_on_the_device_equal_the_stock_processor():
    """The deferred path (`hawk run`: resize on the host, arithmetic on the device) with Qwen3-VL's patch size,
    mean and std gives the stock PIL processor's patches bit for bit."""
    processor = tiny_image_processor(family="qwen3_vl")
    prompts = Qwen3Prompts(tiny_tokenizer(), processor)
    images = (random_image(224, 128, 1), random_image(100, 70, 2))
    request = Request("what color is the circle ?", images, video=(random_image(96, 96, 3),) * 2)
    encoded = prompts.encode(request, defer_pixels=True)
    assert encoded.images_u8 and encoded.pixel_values is None  # really deferred
    inputs = prompts.collate([request], [encoded]).to("cpu")
    assert torch.equal(inputs.pixel_values, processor(images=list(images), return_tensors="pt")["pixel_values"])
    assert torch.equal(inputs.input_ids, prompts.collate([request]).input_ids)


def test_timestamps_are_the_mean_time_of_each_temporal_patch():
    # 5 frames at 2 fps: 0, 0.5, 1, 1.5, 2 s, the last repeated to fill a patch -> means 0.25, 1.25, 2.0
    assert frame_timestamps(5, 2.0, 2) == [0.25, 1.25, 2.0]
    assert frame_timestamps(4, 4.0, 2) == [0.125, 0.625]
    text = with_timestamps(f"a {WRAPPER} b", [0.25, 1.25, 2.0])
    assert text == (
        "a <0.2 seconds><|vision_start|><|video_pad|><|vision_end|><1.2 seconds><|vision_start|>"
        "<|video_pad|><|vision_end|><2.0 seconds><|vision_start|><|video_pad|><|vision_end|> b"
    )
    assert with_timestamps("a <|video_pad|> b", [0.5]) == "a <0.5 seconds><|vision_start|><|video_pad|><|vision_end|> b"


def stock_video_layout(frames, mean=0.5, std=0.5) -> torch.Tensor:
    """`Qwen3VLVideoProcessor` after its resize: rescale, normalise, pad to whole temporal patches, patchify
    (its view / permute), written out with NumPy for frames already at the size it keeps."""
    arrays = [((np.asarray(f, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1) for f in frames]
    videos = torch.from_numpy(np.stack(arrays))[None]  # [1, T, C, H, W]
    tp, patch, merge = 2, 16, 2
    if pad := -videos.shape[1] % tp:
        videos = torch.cat((videos, videos[:, -1:].expand(-1, pad, -1, -1, -1)), dim=1)
    _, count, channel, height, width = videos.shape
    grid_t, grid_h, grid_w = count // tp, height // patch, width // patch
    patches = videos.reshape(1, grid_t, tp, channel, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    return patches.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(grid_t * grid_h * grid_w, channel * tp * patch * patch)


@pytest.mark.parametrize("n_frames", [4, 5])
def test_video_pixels_follow_the_stock_video_layout(n_frames):
    frames = [random_image(128, 96, seed) for seed in range(n_frames)]  # 96x128: the clip's smart_resize keeps it
    video = build_video(tiny_image_processor(family="qwen3_vl"), frames, fps=2.0)
    expected = stock_video_layout(frames)
    assert video.video_grid_thw.tolist() == [(n_frames + 1) // 2, 6, 8]
    assert video.pixel_values_videos.shape == expected.shape
    assert (video.pixel_values_videos - expected).abs().max() < 1e-5


def test_frames_are_sized_by_the_stock_video_rule_over_the_whole_clip():
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    processor = tiny_image_processor(family="qwen3_vl")
    for count, (width, height) in ((8, (500, 350)), (3, (40, 60)), (480, (1280, 720))):
        expected = smart_resize(
            count, height, width, temporal_factor=2, factor=32, min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS
        )
        assert frame_size(count, width, height, processor) == expected
    assert 480 * expected[0] * expected[1] <= VIDEO_MAX_PIXELS  # a long clip shrinks its frames
    frames = [random_image(500, 350, 0)] * 8
    assert build_video(processor, frames, fps=2.0).video_grid_thw.tolist() == [4, 352 // 16, 512 // 16]


def test_rope_ids_split_each_video_into_temporal_patches():
    """hawk's per-row, remembered rotary ids equal the stock batched `get_rope_index` on a left-padded batch
    with videos; the Qwen2-VL cache (one grid per video) cannot even walk this prompt."""
    model, tokenizer = tiny_model("qwen3_vl"), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    frames = tuple(random_image(128, 96, seed) for seed in range(5))
    requests = [
        Request("how many stars are there ?", (random_image(96, 96, 1),), video=frames),
        Request("what color is the circle ?", (random_image(224, 128, 2),)),
        Request("what shape is there ?", video=frames[:3], fps=1.0),
    ]
    inputs = adapter.prompts(tokenizer, tiny_image_processor(family="qwen3_vl")).collate(requests)
    grids = inputs.video_grid_thw.clone()
    stock, _ = model.model.get_rope_index(
        inputs.input_ids,
        inputs.mm_token_type_ids,
        image_grid_thw=inputs.image_grid_thw,
        video_grid_thw=inputs.video_grid_thw,
        attention_mask=inputs.attention_mask,
    )
    assert torch.equal(inputs.video_grid_thw, grids)  # the stock routine split a copy
    assert torch.equal(adapter.rope_index(inputs), stock)
    assert torch.equal(adapter.rope_index(inputs), stock)  # remembered layouts give the same ids
    with pytest.raises(RuntimeError):
        RopeIndexCache(model.model.get_rope_index, takes_second_per_grid=False)(inputs)


# --- stand-in processors and published configs ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["qwen3-vl-8b", "qwen3-vl-30b-a3b"])
def test_standin_processors_carry_the_published_ids_and_bounds(name):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(CONFIG_DIR / f"{name}.json"))
    tokenizer, processor = adapter_class(config.model_type).standin_processors(config)
    ids = {
        token: tokenizer.convert_tokens_to_ids(token)
        for token in (
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        )
    }
    assert list(ids.values()) == [151643, 151644, 151645, 151652, 151653, 151655, 151656]
    prompts = Qwen3Prompts(tokenizer, processor)
    assert prompts.visual_tokens(random_image(1008, 1008)) == 1024  # 1024^2 after resizing: 32 x 32 merged cells
    assert prompts.visual_tokens(random_image(64, 64)) == 64  # at least 256^2 pixels
    inputs = prompts.collate([Request("what color is the circle ?", (random_image(256, 256),))])
    assert "system" not in tokenizer.decode(inputs.input_ids[0])  # Qwen3-VL writes no default system turn
    assert int((inputs.input_ids == 151655).sum()) == 64


def test_standin_refuses_a_config_whose_vision_ids_are_not_qwens():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(CONFIG_DIR / "qwen3-vl-8b.json"))
    config.video_token_id = 248057
    with pytest.raises(ModelError) as raised:
        Qwen3VLAdapter.standin_processors(config)
    assert "video_token_id" in raised.value.render() and "\n" not in raised.value.render()


@pytest.mark.parametrize(
    "name, layers, hidden, heads, kv_heads", [("qwen3-vl-8b", 36, 4096, 32, 8), ("qwen3-vl-30b-a3b", 48, 2048, 32, 4)]
)
def test_published_configs_build_with_their_parameter_counts(name, layers, hidden, heads, kv_heads):
    from transformers import AutoConfig, AutoModelForImageTextToText

    from hawk_cli.tasks.benchmark import resolve_config

    config = AutoConfig.from_pretrained(str(resolve_config(name)))
    assert adapter_class(config.model_type) is Qwen3VLAdapter
    text, vision = config.get_text_config(), config.vision_config
    assert (
        text.num_hidden_layers,
        text.hidden_size,
        text.num_attention_heads,
        text.num_key_value_heads,
        text.head_dim,
    ) == (layers, hidden, heads, kv_heads, 128)
    assert text.rope_parameters["mrope_section"] == [24, 20, 20] and text.rope_parameters["mrope_interleaved"]
    assert (
        vision.depth,
        vision.patch_size,
        vision.spatial_merge_size,
        list(vision.deepstack_visual_indexes),
        vision.out_hidden_size,
    ) == (27, 16, 2, [8, 16, 24], hidden)
    assert (config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id) == (
        151655,
        151656,
        151652,
        151653,
    )
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    if name == "qwen3-vl-8b":
        assert total == 8_767_123_696  # the published checkpoint's parameter count
    else:
        # 31B in all; 3B active in the language model, plus the vision tower and the embedding tables
        assert 30e9 < total < 32e9 and 3e9 < total - experts * (1 - 8 / 128) < 4e9


def _small_config(name: str, tmp_path):
    """A shipped config shrunk to a few layers (CPU-sized), every other field as published."""
    config = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    config["text_config"].update(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        moe_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
    )
    config["text_config"]["rope_parameters"]["mrope_section"] = [4, 2, 2]
    config["vision_config"].update(
        depth=3, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64, deepstack_visual_indexes=[0, 1]
    )
    if name == "qwen3-vl-8b":
        for key in ("moe_intermediate_size", "num_experts", "num_experts_per_tok"):
            config["text_config"].pop(key)
    path = tmp_path / f"{name}-small.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("name", ["qwen3-vl-8b", "qwen3-vl-30b-a3b"])
def test_bench_with_random_weights_runs_the_family_and_its_check(capsys, tmp_path, name):
    from cli_helpers import run_cli

    path = _small_config(name, tmp_path)
    quick = ["--size", "112", "--max-new-tokens", "3", "--warmup", "0", "--repeats", "1", "--device", "cpu"]
    code, out, err = run_cli(
        capsys, "bench", "--config", str(path), "--random-weights", "--batch", "1", "--json", "--no-stock", *quick
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["variant"] for r in records} == {
        "unpruned",
        "pruned",
        "downscaled",
        "run_path",
    } and "random weights" in err
    unpruned = next(r for r in records if r["variant"] == "unpruned")
    assert unpruned["visual_tokens"] == [64]  # the published minimum: 256^2 pixels, 32-pixel merged cells
    code, out, err = run_cli(
        capsys, "bench", "--config", str(path), "--random-weights", "--check", "--batch", "2", *quick
    )
    assert code == 0, err
    assert out.startswith("PASS")


# --- checkpoint folders -----------------------------------------------------------------------------------
PUBLISHED_PREPROCESSOR = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor",
    "image_processor_type": "Qwen2VLImageProcessorFast",
}


def _processor_settings(folder, style: str) -> None:
    """Image-processor settings as checkpoints ship them; none of them names a video processor."""
    settings = dict(PUBLISHED_PREPROCESSOR)
    if style == "published":
        (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    elif style == "unnamed":  # no processor class at all
        for key in ("image_processor_type", "processor_class"):
            settings.pop(key)
        (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    else:  # transformers 5.x style: the image processor inline in processor_config.json
        processor_class = settings.pop("processor_class")
        (folder / "processor_config.json").write_text(
            json.dumps({"image_processor": settings, "processor_class": processor_class})
        )


@pytest.mark.parametrize("style", ["published", "unnamed", "inline"])
@pytest.mark.parametrize("family", QWEN3_FAMILIES)
def test_checkpoint_folders_load_with_their_image_processor_settings(tmp_path, family, style):
    from transformers import Qwen2VLImageProcessorPil

    tiny_model(family, device="cpu", dtype=torch.float32).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    _processor_settings(tmp_path, style)
    session = HawkSession.open(str(tmp_path), device="cpu")
    processor = session.loaded.image_processor
    assert isinstance(session.adapter, Qwen3VLAdapter)
    assert type(processor) is Qwen2VLImageProcessorPil  # the PIL pin, whatever class the settings name
    assert (processor.patch_size, list(processor.image_mean)) == (16, [0.5, 0.5, 0.5])
    scorer, notices = session.make_scorer()
    assert scorer.weights_source == "uniform" and notices[0].startswith("no head weights for this model")
    frames = tuple(random_image(128, 96, seed) for seed in range(4))
    output = session.run(
        [Request("what color is the circle ?", (random_image(256, 256),), video=frames)],
        scorer,
        GenerationSettings(ratio=0.5, max_new_tokens=2),
    )
    stats = output.answers[0].stats
    assert (stats.visual_tokens, stats.visual_tokens_kept) == (64 + 2 * 12, 44)


def test_moe_decode_floor_counts_only_the_chosen_experts():
    """A decode step of the MoE reads `num_experts_per_tok` of `num_experts` experts per layer (2 of 4 here);
    the dense model's count is the base rule (every decoder weight and the head)."""
    from hawk_cli.adapters.qwen2_vl.adapter import QwenVLAdapter

    dense = adapter_for(tiny_model("qwen3_vl"), tiny_tokenizer())
    assert dense.decoder_weight_bytes() == QwenVLAdapter.decoder_weight_bytes(dense)
    model = tiny_model("qwen3_vl_moe")
    moe = adapter_for(model, tiny_tokenizer())
    experts = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".mlp.experts." in n)
    assert experts > 0
    assert moe.decoder_weight_bytes() == QwenVLAdapter.decoder_weight_bytes(moe) - experts // 2


def test_kept_counts_are_per_image_and_per_video_even_with_timestamps_between_frames():
    """Qwen3-VL writes a text timestamp before each temporal patch of a video, so its visual tokens are not one
    run: the per-image counts (CLI stats line, JSON, library) still have one entry per image and one for the
    video, each the number of that visual's pad tokens in the prompt."""
    from hawk_cli.engine.library import HawkModel
    from hawk_cli.engine.results import visual_blocks
    from hawk_cli.io.models import LoadedModel

    loaded = LoadedModel(
        model=tiny_model("qwen3_vl", device="cpu", dtype=torch.float32),
        tokenizer=tiny_tokenizer(),
        image_processor=tiny_image_processor(family="qwen3_vl"),
    )
    session = HawkSession(loaded)
    scorer, _ = session.make_scorer()
    frames = tuple(random_image(128, 96, seed) for seed in range(4))
    request = Request("what color is the circle ?", (random_image(256, 256),), video=frames)
    ids = session.build_inputs([request]).input_ids[0]
    pads = (int((ids == session.adapter.tokens.image).sum()), int((ids == session.adapter.tokens.video).sum()))
    answer = session.run([request], scorer, GenerationSettings(ratio=0.5, max_new_tokens=2)).answers[0]
    assert answer.visual_blocks == pads
    assert len(answer.kept_per_block()) == 2 and sum(answer.kept_per_block()) == answer.stats.visual_tokens_kept
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": request.images[0]},
                {"type": "video", "video": list(frames)},
                {"type": "text", "text": request.question},
            ],
        }
    ]
    out = HawkModel(session).generate(messages=chat, ratio=0.5, max_new_tokens=2)
    assert [total for _, total in out.kept_per_image] == list(pads)
    assert sum(kept for kept, _ in out.kept_per_image) == out.stats.visual_tokens_kept
    # negative control: counting runs of visual tokens splits this video at its timestamps
    visual = (ids == session.adapter.tokens.image) | (ids == session.adapter.tokens.video)
    assert len(visual_blocks(visual)) > 2

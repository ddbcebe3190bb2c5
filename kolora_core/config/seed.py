"""The seed notebook's eight story prompts, in the seed's order, with the seed's seeds.

The seed renders these one by one with `torch.manual_seed(seed)` before each call and tiles them
2 columns x 4 rows in this order; the defaults of `GenerateConfig` reproduce that exactly.
"""

from __future__ import annotations

SEED_NEGATIVE = "丑陋、变形、嘈杂、模糊、低对比度"

# (prompt, negative prompt, seed) exactly as written in the seed notebook.
SEED_STORY: tuple[tuple[str, str, int], ...] = (
    ("二次元,一个紫色短发小女孩,在家中沙发上坐着,双手托着腮,很无聊,全身,粉色连衣裙", SEED_NEGATIVE, 0),
    (
        "二次元,日系动漫,演唱会的观众席,人山人海,一个紫色短发小女孩穿着粉色吊带漏肩连衣裙坐在演唱会的观众席,"
        "舞台上衣着华丽的歌星们在唱歌",
        SEED_NEGATIVE,
        1,
    ),
    (
        "二次元,一个紫色短发小女孩穿着粉色吊带漏肩连衣裙坐在演唱会的观众席,露出憧憬的神情",
        SEED_NEGATIVE + ",色情擦边",
        2,
    ),
    (
        "二次元,一个紫色短发小女孩穿着粉色吊带漏肩连衣裙,对着流星许愿,闭着眼睛,十指交叉,侧面",
        SEED_NEGATIVE + ",扭曲的手指,多余的手指",
        5,
    ),
    ("二次元,一个紫色中等长度头发小女孩穿着粉色吊带漏肩连衣裙,在练习室练习唱歌", SEED_NEGATIVE, 0),
    ("二次元,一个紫色长发小女孩穿着粉色吊带漏肩连衣裙,在练习室练习唱歌,手持话筒", SEED_NEGATIVE, 1),
    ("二次元,紫色长发少女,穿着黑色连衣裙,试衣间,心情忐忑", SEED_NEGATIVE, 7),
    ("二次元,紫色长发少女,穿着黑色礼服,连衣裙,在台上唱歌", SEED_NEGATIVE, 0),
)

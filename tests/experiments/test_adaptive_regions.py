import numpy as np

from experiments.adaptive_regions import RegionSettings, answer_region, merge_regions, rank_regions


def test_neighbours_with_close_class_distributions_merge_and_others_do_not():
    segments = np.array([[0, 0, 1, 1, 2, 2]] * 4)
    probabilities = np.zeros((2, 4, 6), np.float32)
    probabilities[0, :, :4] = 0.9  # segments 0 and 1: mostly class 0
    probabilities[1, :, :4] = 0.1
    probabilities[1, :, 4:] = 1.0  # segment 2: class 1
    regions = merge_regions(segments, probabilities, RegionSettings(merge_distance=0.2))
    assert regions[0, 0] == regions[0, 2] != regions[0, 4]


def test_regions_stop_growing_at_the_size_limit():
    segments = np.repeat(np.arange(10)[None], 3, axis=0)  # ten 3-pixel superpixels in a row
    probabilities = np.ones((1, 3, 10), np.float32)
    regions = merge_regions(segments, probabilities, RegionSettings(max_region=9))
    sizes = np.bincount(regions.ravel())
    assert sizes.max() <= 9 and len(np.unique(regions)) >= 4


def test_ranking_by_total_uncertainty_and_the_dominant_class_answer():
    regions = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [-1, 2, 2, 2]])
    uncertainty = np.array([[0.2] * 4, [0.2] * 4, [np.nan, 0.9, 0.1, 0.1]], np.float32)
    uncertainty[:2, 3] = 0.5
    assert rank_regions(regions, uncertainty) == [0, 2, 1]  # 6 × 0.2 > 1.1 > 2 × 0.5
    assert rank_regions(regions, uncertainty, exclude={0}) == [2, 1]
    truth = np.array([[3, 3, 1, 0], [3, 255, 3, 0], [255, 2, 2, 2]], np.uint8)
    answer = answer_region(regions, 0, truth)
    assert set(answer.classes.tolist()) == {3} and len(answer) == 6 and not answer.clicked.any()
    assert answer_region(np.array([[0]]), 0, np.array([[255]], np.uint8)) is None

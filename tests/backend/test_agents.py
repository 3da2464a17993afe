import numpy as np

from backend.io.clicks import Click
from backend.io.tiling import Patch
from backend.predict.evaluation import LABEL_NODATA
from backend.protocols.agents import dial_click, errors, region_centre, sial_clicks


def test_the_centre_of_a_ring_lies_on_the_ring():
    rows, cols = np.mgrid[0:61, 0:61]
    radius = np.hypot(rows - 30, cols - 30)
    ring = (radius > 20) & (radius < 28)
    row, col = region_centre(ring)
    assert ring[row, col]  # a centroid would fall in the hole


def test_the_largest_region_wins():
    mask = np.zeros((50, 50), dtype=bool)
    mask[2:6, 2:6] = True
    mask[20:40, 10:30] = True
    row, col = region_centre(mask)
    assert 20 <= row < 40 and 10 <= col < 30
    assert region_centre(np.zeros((5, 5), dtype=bool)) is None


def test_dial_clicks_the_largest_error_of_the_patch_with_the_true_class():
    truth = np.zeros((100, 100), dtype=np.uint8)
    truth[60:90, 60:90] = 3
    predicted = np.zeros_like(truth)
    predicted[10:14, 10:14] = 2  # a small error in the first patch
    truth[95:, :] = 255  # ignored labels never count
    predicted[95:, :] = 4
    assert dial_click(predicted, truth, Patch(0, 0, 0, 50, 50)) == Click(11, 11, 0)
    click = dial_click(predicted, truth, Patch(3, 50, 50, 50, 50))
    assert 60 <= click.row < 90 and 60 <= click.col < 90 and click.class_id == 3
    assert dial_click(truth, truth, Patch(0, 0, 0, 100, 100)) is None


def test_sial_clicks_once_per_class_on_that_class_errors():
    truth = np.zeros((60, 60), dtype=np.uint8)
    truth[:, 30:] = 1
    truth[40:, :10] = 2
    predicted = np.ones_like(truth)  # class 0 and 2 wrong everywhere, class 1 right
    clicks = sial_clicks(predicted, truth, classes=[0, 1, 2])
    assert [c.class_id for c in clicks] == [0, 2]
    for c in clicks:
        assert truth[c.row, c.col] == c.class_id and errors(predicted, truth)[c.row, c.col]


def test_sial_clicks_per_class_visits_the_largest_missed_regions_first():
    truth = np.ones((60, 60), dtype=np.uint8)
    truth[2:22, 2:22] = 0  # 400 px
    truth[30:40, 30:40] = 0  # 100 px
    truth[50:54, 50:54] = 0  # 16 px
    predicted = np.ones_like(truth)  # every class-0 region missed
    one = sial_clicks(predicted, truth, classes=[0, 1])
    two = sial_clicks(predicted, truth, classes=[0, 1], per_class=2)
    many = sial_clicks(predicted, truth, classes=[0, 1], per_class=5)
    assert one == [Click(11, 11, 0)]
    assert two == [Click(11, 11, 0), Click(34, 34, 0)]
    assert [(c.row // 10, c.col // 10) for c in many] == [(1, 1), (3, 3), (5, 5)]  # only three exist


def test_sial_clicks_before_any_model_sit_at_the_centres_of_every_class_largest_regions():
    truth = np.ones((60, 60), dtype=np.uint8)
    truth[2:22, 2:22] = 0
    truth[30:40, 30:40] = 0
    truth[:, 58:] = LABEL_NODATA
    clicks = sial_clicks(None, truth, classes=[0, 1, 2], per_class=2)
    assert clicks[:2] == [Click(11, 11, 0), Click(34, 34, 0)]
    assert [c.class_id for c in clicks[2:]] == [1]  # class 1 is one region; class 2 is absent
    assert truth[clicks[2].row, clicks[2].col] == 1


def test_dials_annotator_goes_on_while_any_patch_has_an_error():
    """Four patches, errors left in one only, which after the first click is no longer the
    least sure of itself: a new pass begins at patches without error, yet the annotator finds
    its way back (it stopped there, counting visits: LoveDA runs ended after 11 of 20 clicks)."""
    from types import SimpleNamespace

    from backend.progress import Monitor
    from backend.protocols.dial import _click_loop

    patches = [Patch(i, 50 * (i // 2), 50 * (i % 2), 50, 50) for i in range(4)]
    truth = np.zeros((100, 100), dtype=np.uint8)
    predicted = truth.copy()
    predicted[:40, :40] = 1  # errors in patch 0 alone
    first, later = [0.9, 0.5, 0.3, 0.1], [0.1, 0.9, 0.5, 0.3]  # entropy before and after a click

    class Annotation:
        def __init__(self):
            self.patches, self.truth, self.clicks = patches, truth, []
            self.maps = SimpleNamespace(classes=predicted)
            self.scores = SimpleNamespace(count=[2500] * 4, score=self.entropy)

        def entropy(self, index):
            return (later if self.clicks else first)[index]

        def add(self, click):
            self.clicks.append(click)
            predicted[click.row, click.col] = truth[click.row, click.col]  # each click fixes its pixel

        def score(self):
            return SimpleNamespace(miou=0.0, per_class=lambda: {})

    run = Annotation()
    steps = _click_loop(run, SimpleNamespace(clicks=5, order="entropy", seed=0), Monitor())
    assert len(steps) == 5 and {s["patch"] for s in steps} == {0}
    predicted[:] = truth  # nothing left to correct: the loop ends instead of circling
    assert _click_loop(Annotation(), SimpleNamespace(clicks=5, order="entropy", seed=0), Monitor()) == []

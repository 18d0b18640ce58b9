"""Nothing changes on the shipped nets: every method's maps equal those of the sequential engine that came before
the captured graph (``tests/data/reference_maps.pt``, written by ``tests/make_reference_maps.py`` before the change)."""

from __future__ import annotations

import warnings

import pytest
import torch

import dvehelpers as dh

from .make_reference_maps import MODELS, PATH, inputs, settings

REFERENCE = torch.load(PATH, weights_only=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_maps_equal_the_sequential_engines(name: str) -> None:
    model = dh.models.load(name)
    images, targets = inputs(MODELS[name])
    expected = REFERENCE[name]
    assert torch.equal(dh.train.predict(model, images), expected["top1"])
    labels = settings(name)
    assert set(labels) == set(expected) - {"top1"}  # every registered method and setting has its reference
    for label, (method, params) in labels.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vebi's notice that a class has fewer relevant features than k
            got = dh.explain(method, model, images, targets, **params)
        torch.testing.assert_close(got, expected[label], rtol=1e-5, atol=1e-5, msg=lambda m, lab=label: f"{lab}: {m}")

"""The method registry (ec4srec/registry.py) is the one source of the methods' rules: config
validation, the CLI's choices, the search space, warm-up sharing, the budget and the report
all follow it."""
from __future__ import annotations

import pytest

from ec4srec import registry
from ec4srec.cli import build_parser
from ec4srec.config import BACKBONES, EXPLAINERS, METHODS, Config, ConfigError, MethodConfig


def test_specs_use_only_the_named_terms():
    for spec in registry.METHODS.values():
        # every term a method adds is one of rec, cl, sl, cl+, cl-, sl+, and L_rec is always in
        assert set(spec.terms) | set(spec.guided_terms) <= set(registry.TERMS), spec
        assert "rec" in spec.terms and (not spec.guided or "rec" in spec.guided_terms), spec


def test_the_guided_warm_up_is_made_of_the_two_baselines():
    # every guided variant warms up on CL4SRec's and DuoRec's terms; an unguided method has none
    assert {m: registry.warmup_baselines(m) for m in registry.GUIDED} == \
        {m: ("cl4srec", "duorec") for m in registry.GUIDED}
    assert registry.warmup_baselines("cl4srec") == ()


def test_guided_methods_are_those_with_guided_terms():
    # the paper's three EC4SRec variants are the guided ones, in the paper's order
    assert registry.GUIDED == ("ec4srec_ssl", "ec4srec_sl", "ec4srec")
    # config's method names are the registry's
    assert METHODS == tuple(registry.METHODS) and BACKBONES == registry.BACKBONE_NAMES


@pytest.mark.parametrize("method", list(registry.METHODS))
def test_config_guided_weights_follow_the_spec(method):
    weights = MethodConfig(name=method).guided_weights()
    # a guided term has a weight exactly when the method's spec lists it
    assert {t for t, w in weights.items() if w > 0} == set(registry.METHODS[method].guided_terms) - {"rec"}


@pytest.mark.parametrize("explainer", EXPLAINERS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_config_accepts_exactly_what_the_registry_accepts(explainer, backbone):
    for method in registry.METHODS:
        raw = Config().to_dict()
        raw["model"]["backbone"], raw["method"]["name"] = backbone, method
        raw["method"]["explainer"] = explainer
        problem = registry.explainer_problem(method, explainer, backbone)
        if problem is None:      # an accepted combination validates
            Config.from_dict(raw)
        else:
            # a rejected combination is one ConfigError with the registry's message
            with pytest.raises(ConfigError, match="needs model.backbone"):
                Config.from_dict(raw)


def test_attention_needs_sasrec_for_a_guided_method_only():
    # attention weights exist in SASRec alone; an unguided method never explains
    assert registry.explainer_problem("ec4srec", "attention", "gru4rec") is not None
    assert registry.explainer_problem("ec4srec", "attention", "sasrec") is None
    assert registry.explainer_problem("cl4srec", "attention", "gru4rec") is None


def test_cli_choices_come_from_the_registry():
    sub = build_parser()._subparsers._group_actions[0].choices
    method = {a.dest: a for a in sub["train"]._actions}["method"]
    diagnose = {a.dest: a for a in sub["diagnose"]._actions}["method"]
    # train offers every method, diagnose the guided ones
    assert list(method.choices) == list(registry.METHODS)
    assert list(diagnose.choices) == list(registry.GUIDED)


def test_search_space_drops_explainers_the_backbone_cannot_run():
    from ec4srec.search.space import SearchSpace
    ranges = {"params": {"method.explainer": {"choices": list(EXPLAINERS)}}, "common": [],
              "backbones": {}, "methods": {"ec4srec": ["method.explainer"]}, "warmup_keys": None}

    class Trial:
        def suggest_categorical(self, name, choices):
            self.choices = choices
            return choices[0]
    for backbone in BACKBONES:
        trial = Trial()
        SearchSpace("ec4srec", backbone, 10, ranges)(trial)
        # the offered explainers are those the registry lets this backbone run
        assert trial.choices == [e for e in EXPLAINERS if registry.explainer_fits(e, backbone)]


def test_specs_name_the_terms_of_the_loss_table():
    from ec4srec.methods import terms
    for method, spec in registry.METHODS.items():
        if method not in terms.METHODS:          # SASRec: L_rec alone, no contrastive table row
            continue
        mc = MethodConfig(name=method)
        first = terms.terms_of(terms.weights(mc, "warmup" if spec.guided else "train"))
        # the spec's terms are those its loss row trains with (before the first update)
        assert first == spec.terms, method
        if spec.guided:
            # and its guided terms those of its guided row
            assert terms.terms_of(terms.weights(mc, "guided")) == spec.guided_terms, method
    # the table's guided methods are the registry's, and it covers every contrastive method
    assert terms.GUIDED == registry.GUIDED
    assert set(terms.METHODS) == {m for m, s in registry.METHODS.items() if s.terms != ("rec",)}

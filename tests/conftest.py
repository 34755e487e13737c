"""Shared fixtures: quickly trained and exported digits models (MLP, CNN, ResNet-8) per test session;
and the markers of every test (the table at the end of this file, docs/testing.md).

The model is trained for real (QAT on scikit-learn's digits, a few epochs, fixed seed) and cached
under build/test-cache keyed by its configuration, so parallel workers and later runs reuse it.
"""

import fcntl
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "test-cache"
MLP_QUICK = {"model": "mlp", "weight_quant": "post", "act_quant": "lsq", "edge_weight_quant": "post",
             "wbits": 4, "abits": 4, "seed": 0, "epochs": 4, "fp_epochs": 4}


def _export(spec, model, metrics, path) -> None:
    """The one export: golden.intdag.export_dag -> golden.graphfile.save_graph (post-accel-intgraph, the
    current version)."""
    from golden.graphfile import save_graph
    from golden.intdag import export_dag

    model.eval()
    save_graph(export_dag(model), path, provenance={"spec": spec.to_dict(), "metrics": metrics})


def _format_version() -> int:
    """The model file version: cached exports of an older arithmetic are not reused."""
    from golden.modelfile import MODEL_VERSION
    return MODEL_VERSION


def _trained_zoo_paths(quick: dict) -> tuple[Path, Path]:
    """(checkpoint, exported model) of the zoo model ``quick`` describes, trained once and cached."""
    from golden.train_zoo import TrainSpec, save_checkpoint, train_spec

    CACHE.mkdir(parents=True, exist_ok=True)
    key = "-".join(f"{k}{v}" for k, v in quick.items()) + f"-v{_format_version()}"
    ckpt, model_path = CACHE / f"{key}.ckpt.safetensors", CACHE / f"{key}.model.safetensors"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model_path.exists():
            spec = TrainSpec(**quick)
            model, metrics = train_spec(spec, progress=False, integer=False)
            save_checkpoint(model, spec, metrics, ckpt)
            _export(spec, model, metrics, model_path)
    return ckpt, model_path


@pytest.fixture(scope="session")
def trained_model_path() -> Path:
    """Path of an exported, trained W4A4 digits MLP (POST weights everywhere, 8-bit first/last layers,
    LSQ activations): the zoo MLP in the one format."""
    return _trained_zoo_paths(MLP_QUICK)[1]


@pytest.fixture(scope="session")
def trained_checkpoint_path(trained_model_path) -> Path:
    """Its training checkpoint (golden.train_zoo)."""
    return _trained_zoo_paths(MLP_QUICK)[0]


@pytest.fixture(scope="session")
def trained_model(trained_model_path):
    """The trained digits MLP as an integer graph."""
    from golden.graphfile import load_graph
    return load_graph(trained_model_path)


@pytest.fixture(scope="session")
def digits_codes(trained_model):
    """(input codes of the stage reading the network input, labels) of the digits test set."""
    from golden.data import load_digits_split
    from golden.intdag import run_graph
    _, _, x_test, y_test = load_digits_split()
    run = run_graph(trained_model, x_test)
    first = next(k for k, st in enumerate(trained_model.stages) if st.input_from == "input")
    return np.asarray(run.codes[first]).reshape(len(x_test), -1), y_test


CNN_QUICK = {"model": "cnn", "weight_quant": "post", "act_quant": "asq", "edge_weight_quant": "post",
             "wbits": 4, "abits": 4, "seed": 0, "epochs": 6, "fp_epochs": 6}


def _trained_cnn_paths() -> tuple[Path, Path]:
    return _trained_zoo_paths(CNN_QUICK)


RESNET8_QUICK = {"model": "resnet8", "weight_quant": "post", "act_quant": "asq", "edge_weight_quant": "post",
                 "wbits": 4, "abits": 4, "seed": 0, "epochs": 4, "fp_epochs": 4}


def _trained_resnet8_path() -> Path:
    from golden.train_zoo import TrainSpec, train_spec

    CACHE.mkdir(parents=True, exist_ok=True)
    key = "-".join(f"{k}{v}" for k, v in RESNET8_QUICK.items()) + f"-v{_format_version()}"
    model_path = CACHE / f"{key}.model.safetensors"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model_path.exists():
            spec = TrainSpec(**RESNET8_QUICK)
            model, metrics = train_spec(spec, progress=False, integer=False)
            _export(spec, model, metrics, model_path)
    return model_path


@pytest.fixture(scope="session")
def trained_resnet8_path() -> Path:
    return _trained_resnet8_path()


@pytest.fixture(scope="session")
def trained_resnet8():
    """A trained digits ResNet-8 (POST weights, ASQ activations; residual adds, 1x1 shortcut convs,
    global average pooling) exported as an integer graph."""
    from golden.graphfile import load_graph
    return load_graph(_trained_resnet8_path())


@pytest.fixture(scope="session")
def trained_cnn_path() -> Path:
    """Path of an exported (the one integer graph format), trained digits CNN: POST weights everywhere (8-bit edge
    layers), ASQ activations in the body — the engine's demo model, trained briefly."""
    return _trained_cnn_paths()[1]


@pytest.fixture(scope="session")
def trained_cnn(trained_cnn_path):
    from golden.graphfile import load_graph
    return load_graph(trained_cnn_path)


# --- Markers: what each test needs (pyproject.toml registers them; --strict-markers) -------------------
# Test bodies carry no marks: every collected test is classified here, from the table below and from
# the fixtures it uses, so that `pytest -m "not sim and not yosys and not slow"` (make test-fast) runs
# the layer that needs neither a simulator nor the FPGA tools. tests/test_markers.py fails when a test
# is in neither the table nor PURE, when a row matches no test, or when a PURE test gets a tool marker.
# A pattern is a node id ("tests/test_x.py::test_name[param]") or a prefix of one ending at a "::" or a
# "[" boundary: "tests/test_x.py" (every test of the file), "tests/test_x.py::test_y" (every
# parametrisation of test_y). docs/testing.md lists the markers and what each needs.

TOOL_MARKERS = ("sim", "icarus", "verilator", "yosys", "torch_train")   # a test needs at least one, or is PURE
COST_MARKERS = ("slow",)                                                # > 30 s alone on an idle machine

# Fixtures that imply markers wherever they are used (directly or through another fixture): a name, or
# "file::name" for a fixture of that test file only.
FIXTURE_MARKERS = {
    "trained_model_path": {"torch_train"}, "trained_checkpoint_path": {"torch_train"},
    "trained_model": {"torch_train"}, "digits_codes": {"torch_train"},
    "trained_cnn_path": {"torch_train"}, "trained_cnn": {"torch_train"},
    "trained_resnet8_path": {"torch_train"}, "trained_resnet8": {"torch_train"},
    "tests/test_hostile.py::cnn_ckpt": {"torch_train"}, "tests/test_hostile.py::cnn_model": {"torch_train"},
    "tests/test_cli_dag.py::resnet8": {"torch_train"},            # `post-accel train --model resnet8`
    "tests/test_intgraph.py::cnn_uniform": {"torch_train"}, "tests/test_intgraph.py::cnn_post": {"torch_train"},
    "tests/test_native.py::native_exe": {"verilator"},
}

# What the fixtures do not tell. Measured per test (docs/testing.md); "slow" = > 30 s alone.
MARKER_TABLE: list[tuple[str, set[str]]] = [
    # the AXI wrapper (engine inside) in Amaranth's simulator, then on both simulators via cocotbext-axi
    ("tests/test_axi.py::test_register_file", {"sim"}),
    ("tests/test_axi.py::test_stream_load_and_result_stream", {"sim"}),
    ("tests/test_axi.py::test_axi_verilator_lint_wall", {"verilator"}),
    ("tests/test_axi.py::test_trained_cnn_through_axi[icarus]", {"icarus", "slow"}),
    ("tests/test_axi.py::test_trained_cnn_through_axi[verilator]", {"verilator", "slow"}),
    ("tests/test_axi.py::test_corrupted_expected_value_fails_the_axi_comparison", {"verilator"}),
    # the CLI in subprocesses
    ("tests/test_cli.py::test_train_export_json", {"torch_train", "sim"}),          # simulate --backend amaranth
    ("tests/test_cli.py::test_simulate_json[amaranth]", {"sim"}),
    ("tests/test_cli.py::test_simulate_json[icarus]", {"icarus"}),
    ("tests/test_cli.py::test_simulate_waves[amaranth-.vcd]", {"sim"}),
    ("tests/test_cli.py::test_simulate_waves[icarus-.vcd]", {"icarus"}),
    ("tests/test_cli.py::test_simulate_waves[icarus-.fst]", {"icarus"}),
    ("tests/test_cli.py::test_simulate_waves[verilator-.vcd]", {"verilator", "slow"}),   # a --waves build
    ("tests/test_cli.py::test_simulate_parallel_jobs_agree", {"icarus"}),
    ("tests/test_cli.py::test_simulate_trained_cnn_json", {"verilator", "slow"}),
    ("tests/test_cli.py::test_train_export_cnn_with_any_quantizers", {"torch_train"}),
    ("tests/test_cli_dag.py::test_simulate_resnet8_verilator", {"verilator", "slow"}),
    # the engine in Amaranth's simulator
    ("tests/test_cycle_model.py::test_cycle_model_equals_rtl", {"sim"}),
    ("tests/test_golden_rtl_property.py", {"sim"}),
    ("tests/test_data.py::test_train_fashion_subset_betas_and_refusals", {"torch_train"}),
    ("tests/test_generate.py::test_verilator_lint_wall", {"verilator"}),
    ("tests/test_generate.py::test_yosys_synth_ice40", {"yosys", "slow"}),
    ("tests/test_golden.py::test_quick_training_is_deterministic", {"torch_train"}),
    ("tests/test_hw_asq.py::test_v2_engine_matches_reference", {"sim"}),
    ("tests/test_hw_asq.py::test_prescale_field_extremes_on_rtl", {"sim"}),
    ("tests/test_hw_asq.py::test_v2_corrupted_adapter_is_caught", {"sim"}),
    ("tests/test_hw_conv.py::test_conv_engine_matches_reference", {"sim"}),
    ("tests/test_hw_engine.py::test_engine_matches_reference", {"sim"}),
    ("tests/test_hw_engine.py::test_engine_last_layer_not_final_and_single_final_layer", {"sim"}),
    ("tests/test_hw_engine.py::test_corrupted_weight_is_caught", {"sim"}),
    ("tests/test_hw_engine.py::test_corrupted_expected_value_is_caught", {"sim"}),
    ("tests/test_hw_engine.py::test_host_protocol", {"sim"}),
    ("tests/test_hw_engine.py::test_verilator_lint", {"verilator"}),
    ("tests/test_hw_engine.py::test_trained_mlp_on_amaranth_engine", {"sim"}),
    ("tests/test_hw_residual.py::test_resnet_like_stack_matches_reference", {"sim"}),
    ("tests/test_hw_residual.py::test_resnet_like_stack_on_icarus", {"icarus"}),
    ("tests/test_hw_tiling.py::test_parts_and_passes_match_reference", {"sim"}),
    ("tests/test_hw_tiling.py::test_parts_and_passes_on_icarus", {"icarus"}),
    ("tests/test_hw_tiling.py::test_activation_regions_are_reused_when_they_do_not_fit_side_by_side", {"sim"}),
    # quick training loops inside the test (test_intgraph._train)
    ("tests/test_intdag.py::test_exported_graph_agrees_with_float_model_on_trained_cnn", {"torch_train"}),
    ("tests/test_intgraph.py::test_other_quantizers", {"torch_train"}),
    ("tests/test_intgraph.py::test_asq_stage_uses_adapter", {"torch_train"}),
    ("tests/test_intgraph.py::test_export_errors", {"torch_train"}),
    ("tests/test_native.py::test_native_driver_equals_golden_and_cocotb", {"icarus", "verilator", "slow"}),
    ("tests/test_native.py::test_direct_weight_loads_in_passes", {"verilator"}),
    ("tests/test_native.py::test_run_folders_removed_after_success_and_failure", {"verilator"}),
    ("tests/test_native.py::test_simulate_builds_outside_the_source_tree", {"verilator"}),
    # the trained models on Icarus and Verilator (cocotb)
    ("tests/test_rtl_cnn.py::test_trained_cnn_bit_exact[icarus]", {"icarus", "slow"}),
    ("tests/test_rtl_cnn.py::test_trained_cnn_bit_exact[verilator]", {"verilator", "slow"}),
    ("tests/test_rtl_cnn.py::test_trained_cnn_corrupted_adapter_is_caught", {"verilator"}),
    ("tests/test_rtl_cocotb.py::test_trained_mlp_bit_exact[icarus]", {"icarus"}),
    ("tests/test_rtl_cocotb.py::test_trained_mlp_bit_exact[verilator]", {"verilator"}),
    ("tests/test_rtl_cocotb.py::test_other_array_shapes_verilator[3-2]", {"verilator"}),
    ("tests/test_rtl_cocotb.py::test_other_array_shapes_verilator[8-8]", {"verilator", "slow"}),
    ("tests/test_rtl_cocotb.py::test_corrupted_weight_is_caught", {"icarus"}),
    ("tests/test_rtl_cocotb.py::test_corrupted_expected_value_is_caught", {"icarus"}),
    ("tests/test_rtl_cocotb.py::test_conv_stack_on_generated_verilog[icarus]", {"icarus"}),
    ("tests/test_rtl_cocotb.py::test_conv_stack_on_generated_verilog[verilator]", {"verilator"}),
    ("tests/test_rtl_cocotb.py::test_depthwise_stack_on_icarus", {"icarus"}),
    ("tests/test_rtl_resnet.py::test_resnet8_on_rtl", {"verilator", "slow"}),
    # yosys (and nextpnr-ice40 for the *_ice40 / --fmax ones)
    ("tests/test_synth.py::test_mac_cell_generic", {"yosys"}),
    ("tests/test_synth.py::test_mac_cells_ice40_post_and_int", {"yosys"}),
    ("tests/test_synth.py::test_cli_synth_pe_generic_json", {"yosys"}),
    ("tests/test_synth.py::test_engine_blocks_ice40", {"yosys", "slow"}),
    ("tests/test_synth.py::test_cli_synth_fmax_missed_exits_1", {"yosys"}),
    ("tests/test_synth.py::test_mac_row_styles_and_cmos_proxy", {"yosys"}),
    # QAT runs (golden.train_zoo, the ablation on Dask)
    ("tests/test_train_zoo.py::test_same_seed_gives_identical_state_dict_and_other_seed_differs", {"torch_train"}),
    ("tests/test_train_zoo.py::test_threads_and_determinism_flag_are_restored", {"torch_train"}),
    ("tests/test_train_zoo.py::test_every_method_trains_a_step_at_4_bits", {"torch_train"}),
    ("tests/test_train_zoo.py::test_mlp_trains_too", {"torch_train"}),
    ("tests/test_train_zoo.py::test_checkpoint_round_trip", {"torch_train"}),
    ("tests/test_train_zoo.py::test_ablate_cli_tiny_json", {"torch_train"}),
    ("tests/test_train_zoo.py::test_serial_and_dask_give_identical_results", {"torch_train"}),
    # a hand-written Verilog neuron checked against the golden vectors by cocotb
    ("tests/test_vectors.py::test_hand_written_neuron_matches_vectors", {"icarus"}),
    ("tests/test_vectors.py::test_hand_written_neuron_catches_a_corrupted_vector", {"icarus"}),
    ("tests/test_zoo.py::test_digits_cnn_learns_in_a_few_steps", {"torch_train"}),
]

# Tests that need none of TOOL_MARKERS: Python only (some simulate one small component in Amaranth's
# simulator, which is a Python package, never the whole engine).
PURE: list[str] = [
    "tests/test_arith.py",
    "tests/test_compile.py::test_v4_stage_fields_reach_the_program",
    "tests/test_compile.py::test_value_bits_flag_is_gone",
    "tests/test_cycle_model.py::test_cycle_model_equals_schedule",
    "tests/test_hw_conv.py::test_conv_program_cycles_and_reference_spread",
    "tests/test_hw_program.py",
    "tests/test_hw_residual.py::test_resnet_like_program_without_simulator",
    "tests/test_hw_asq.py::test_prescale_gain_saturates_instead_of_refusing",
    "tests/test_axi.py::test_axi_map_round_trip",
    "tests/test_axi.py::test_generate_bus_axi",
    "tests/test_cli.py::test_help_for_every_command",
    "tests/test_cli.py::test_train_bad_bits",
    "tests/test_cli.py::test_missing_model_file",
    "tests/test_cli.py::test_pickle_is_never_loaded",
    "tests/test_cli.py::test_old_model_files_name_the_reexport_command",
    "tests/test_cli.py::test_train_rejects_non_digits_models",
    "tests/test_cli_dag.py::test_train_help_mentions_resnet8",
    "tests/test_cli_dag.py::test_export_error_is_one_line",
    "tests/test_cli_policy.py",
    "tests/test_cycle_model.py::test_fc_layer_figures",
    "tests/test_cycle_model.py::test_conv_and_depthwise_schedule",
    "tests/test_cycle_model.py::test_shapes_file_is_in_sync_with_the_zoo",
    "tests/test_dagfile.py",
    "tests/test_data.py::test_read_idx_round_trip",
    "tests/test_data.py::test_read_idx_corrupt",
    "tests/test_data.py::test_read_idx_expectations_and_bad_gzip",
    "tests/test_data.py::test_fashion_loader_on_small_files",
    "tests/test_data.py::test_fashion_loader_errors",
    "tests/test_data.py::test_fashion_loader_missing_folder_names_package",
    "tests/test_data.py::test_load_dataset_digits_is_the_default",
    "tests/test_data.py::test_load_dataset_fashion_mnist_installed",
    "tests/test_data.py::test_load_dataset_bad_arguments",
    "tests/test_data.py::test_model_dataset_and_check",
    "tests/test_data.py::test_zoo_models_take_28x28",
    "tests/test_data.py::test_zoo_bad_input_shape",
    "tests/test_generate.py::test_generate_json_and_manifest",
    "tests/test_generate.py::test_generate_is_deterministic",
    "tests/test_generate.py::test_generate_bad_widths",
    "tests/test_generate.py::test_generate_bad_rows_exits_nonzero",
    "tests/test_golden.py::test_data_split",
    "tests/test_golden.py::test_post_quantizer_levels_match_encode_post",
    "tests/test_golden.py::test_post_quantizer_gradients",
    "tests/test_golden.py::test_lsq_quantizer_init_codes_and_gradients",
    "tests/test_golden.py::test_bad_bit_widths_raise_value_error",
    "tests/test_golden.py::test_model_structure",
    "tests/test_golden.py::test_old_format_generations_are_refused_with_the_reexport_command",
    "tests/test_graphfile.py",
    "tests/test_hostile.py::test_check_output_path_refuses_special_and_impossible_targets",
    "tests/test_hostile.py::test_atomic_output_leaves_nothing_on_failure_and_replaces_on_success",
    "tests/test_hostile.py::test_locked_dir_serialises_writers",
    "tests/test_hostile.py::test_train_checks_out_before_training",
    "tests/test_hostile.py::test_generate_out_paths_and_array_limits",
    "tests/test_hostile.py::test_synth_checks_limits_and_tools_before_building",
    "tests/test_hostile.py::test_fifo_inputs_are_refused_not_read",
    "tests/test_hw_array.py",
    "tests/test_hw_asq.py::test_v2_reference_matches_numpy",
    "tests/test_hw_asq.py::test_prescale_rounding_trick_is_round_shift",
    "tests/test_hw_asq.py::test_prescale_descriptor_and_effect",
    "tests/test_hw_asq.py::test_prescale_saved_residual_is_the_pooled_value",
    "tests/test_hw_asq.py::test_prescale_build_errors",
    "tests/test_hw_asq.py::test_v2_build_program_errors",
    "tests/test_hw_asq.py::test_v2_build_program_two_factors",
    "tests/test_hw_asq.py::test_v2_input_beta_needs_host_beta",
    "tests/test_hw_asq_unit.py",
    "tests/test_hw_conv.py::test_depthwise_reference_is_per_channel",
    "tests/test_hw_conv.py::test_grouped_conv_is_refused",
    "tests/test_hw_conv.py::test_conv_layer_checks",
    "tests/test_hw_engine.py::test_cycle_formula",
    "tests/test_hw_engine.py::test_build_program_errors",
    "tests/test_hw_engine.py::test_build_program_memory_errors",
    "tests/test_hw_engine.py::test_engine_params_errors",
    "tests/test_hw_engine.py::test_engine_params_derived",
    "tests/test_hw_engine.py::test_verilog_deterministic_and_ports",
    "tests/test_hw_feed.py",
    "tests/test_hw_host_port.py",
    "tests/test_hw_pe.py",
    "tests/test_hw_pool.py",
    "tests/test_hw_rescale.py",
    "tests/test_hw_rescale_unit.py",
    "tests/test_hw_residual.py::test_residual_reference_is_the_integer_dag_add",
    "tests/test_hw_residual.py::test_residual_and_branch_errors",
    "tests/test_hw_residual.py::test_one_saved_map_at_a_time",
    "tests/test_hw_sequencer.py",
    "tests/test_intdag.py::test_every_layer_matches_float_model",
    "tests/test_intdag.py::test_signed_activations_in_mobilenet",
    "tests/test_intdag.py::test_untraceable_or_unsupported_ops_are_reported",
    "tests/test_intgraph.py::test_signed_multiplier_and_rescale",
    "tests/test_intgraph.py::test_asq_tables_and_index",
    "tests/test_intgraph.py::test_asq_quantize_matches_division",
    "tests/test_intgraph.py::test_integer_levels",
    "tests/test_intgraph.py::test_adapter_weight_exponent",
    "tests/test_markers.py",
    "tests/test_native.py::test_cache_dir_follows_xdg",
    "tests/test_overhead.py",
    "tests/test_pe_variants.py",
    "tests/test_quantizers.py",
    "tests/test_synth.py::test_missing_tool_message",
    "tests/test_synth.py::test_parse_stat_and_fmax",
    "tests/test_synth.py::test_harness_and_port_parsing",
    "tests/test_synth.py::test_run_jobs_order_serial_and_dask",
    "tests/test_synth.py::test_parse_blocks_rolls_up_submodules",
    "tests/test_synth.py::test_cli_synth_fmax_needs_pnr",
    "tests/test_train_zoo.py::test_bad_spec_gives_a_clear_error",
    "tests/test_train_zoo.py::test_unsupported_bits_become_rows_not_crashes",
    "tests/test_train_zoo.py::test_unknown_method_lists_the_valid_ones",
    "tests/test_vectors.py::test_helper_imports_without_torch",
    "tests/test_vectors.py::test_not_a_graph_file_is_a_one_line_error",
    "tests/test_zoo.py::test_builds_and_runs_with_edge_layers_at_8_bits",
    "tests/test_zoo.py::test_float_parameter_counts_match_reference",
    "tests/test_zoo.py::test_other_quantizers_plug_in",
    "tests/test_zoo.py::test_bad_names_list_the_valid_ones",
    "tests/test_zoo.py::test_layer_shapes_resnet18_at_224",
    "tests/test_zoo.py::test_layer_shapes_mobilenetv2_depthwise",
    "tests/test_zoo.py::test_layer_shapes_leaves_the_model_untouched",
    "tests/test_zoo.py::test_quantization_switch_gives_the_float_layer",
    "tests/test_zoo.py::test_mobilenetv2_linear_bottleneck_inputs_are_signed",
]


def _matches(pattern: str, nodeid: str) -> bool:
    """``pattern`` is ``nodeid`` or a prefix of it ending at a ``::`` or ``[`` boundary."""
    return nodeid == pattern or nodeid.startswith(pattern + "::") or nodeid.startswith(pattern + "[")


def classify(nodeid: str, fixturenames=(), own_marks=(), table=None, pure=None) -> dict:
    """{"markers", "pure", "rows"} of the test ``nodeid``: the markers of the table rows that match it,
    of the fixtures it uses and of its own marks (``own_marks``); whether a PURE pattern matches it;
    the patterns that matched. ``icarus`` and ``verilator`` imply ``sim``."""
    table = MARKER_TABLE if table is None else table
    pure = PURE if pure is None else pure
    marks = set(own_marks) & set(TOOL_MARKERS + COST_MARKERS)
    rows = set()
    for pattern, row in table:
        if _matches(pattern, nodeid):
            marks |= row
            rows.add(pattern)
    test_file = nodeid.split("::", 1)[0]
    for name in fixturenames:
        marks |= FIXTURE_MARKERS.get(name, set()) | FIXTURE_MARKERS.get(f"{test_file}::{name}", set())
    if marks & {"icarus", "verilator"}:
        marks.add("sim")
    pure_rows = {pattern for pattern in pure if _matches(pattern, nodeid)}
    return {"markers": sorted(marks), "pure": bool(pure_rows), "rows": sorted(rows | pure_rows)}


def classification_problems(report: dict, table=None, pure=None) -> list[str]:
    """One line per problem in ``report`` ({node id: classify(...)} of the whole collected suite): a
    test with no tool marker that is not PURE, a PURE test with a tool marker, a row that matches no
    test."""
    table = MARKER_TABLE if table is None else table
    pure = PURE if pure is None else pure
    problems, used = [], set()
    for nodeid, entry in report.items():
        used |= set(entry["rows"])
        tools = sorted(set(entry["markers"]) & set(TOOL_MARKERS))
        if not tools and not entry["pure"]:
            problems.append(f"unclassified: {nodeid} (add it to MARKER_TABLE or PURE in tests/conftest.py)")
        elif tools and entry["pure"]:
            problems.append(f"PURE but marked {tools}: {nodeid}")
    for pattern in [p for p, _ in table] + list(pure):
        if pattern not in used:
            problems.append(f"stale row, matches no test: {pattern}")
    return problems


def pytest_addoption(parser):
    parser.addoption("--marker-report", metavar="PATH", default=None,
                     help="write the classification of every collected test ({node id: {markers, pure, "
                          "rows}}) as JSON; tests/test_markers.py reads it")


@pytest.hookimpl(tryfirst=True)          # before `-m` deselects on the markers added here
def pytest_collection_modifyitems(config, items):
    report = {}
    for item in items:
        entry = classify(item.nodeid, getattr(item, "fixturenames", ()), [m.name for m in item.iter_markers()])
        for name in entry["markers"]:
            item.add_marker(name)
        report[item.nodeid] = entry
    path = config.getoption("--marker-report")
    if path:
        Path(path).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")

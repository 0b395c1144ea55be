"""Export of a module to an ONNX file, and the check of the file."""
import torch


def export_onnx(module,
                inputs,
                path,
                dynamic=False,
                dims=(2, 3),
                opset=None,
                dynamo=True,
                input_names=None,
                output_names=None):
    """Export ``module`` at the example ``inputs`` to the ONNX file
    ``path``, its operators all in the default ONNX domain.

    Args:
        module (nn.Module): in eval mode; takes the tensors of ``inputs``.
        inputs (tuple[Tensor]): example (N, C, H, W) inputs.
        path (str): the .onnx file to write (weights inside it).
        dynamic (bool): the ``dims`` of every input are left free in the
            graph. Defaults to False.
        dims (tuple[int]): the dims that ``dynamic`` frees. Defaults to
            (2, 3), height and width; the batch stays that of ``inputs``.
        opset (int, optional): ONNX opset; None for the exporter's default
            (18 for ``dynamo=True``, 17 here for ``dynamo=False``).
        dynamo (bool): torch's default exporter (``torch.export``); False
            for the TorchScript one. Defaults to True.
        input_names (list[str], optional): defaults to input0, input1...
        output_names (list[str], optional): names of the outputs.
    """
    input_names = input_names or [f'input{i}' for i in range(len(inputs))]
    if dynamo:
        dynamic_shapes = None
        if dynamic:
            dynamic_shapes = tuple({d: torch.export.Dim.DYNAMIC
                                    for d in dims} for _ in inputs)
        torch.onnx.export(
            module,
            tuple(inputs),
            path,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            external_data=False,
            verbose=False)
    else:
        dynamic_axes = None
        if dynamic:
            dynamic_axes = {
                name: {
                    d: f'{name}_dim{d}'
                    for d in dims
                }
                for name in input_names
            }
        torch.onnx.export(
            module,
            tuple(inputs),
            path,
            dynamo=False,
            dynamic_axes=dynamic_axes,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset or 17)
    return path


def check_onnx(path):
    """Check the ONNX file ``path`` with ``onnx.checker`` (with shape
    inference) and that every node is a standard ONNX operator.

    Returns:
        onnx.ModelProto: the model.

    Raises:
        ValueError: a node or an imported opset outside the default domain.
    """
    import onnx
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    custom = sorted({
        f'{node.domain}::{node.op_type}'
        for node in _nodes(model.graph) if node.domain not in ('', 'ai.onnx')
    } | {f'function {f.domain}::{f.name}'
         for f in model.functions})
    if custom:
        raise ValueError(f'{path}: operators outside the default ONNX '
                         f'domain: {", ".join(custom)}')
    return model


def _nodes(graph):
    """Every node of ``graph``, with those of its subgraphs (If, Loop)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in (*attr.graphs, *([attr.g] if attr.g.node else [])):
                yield from _nodes(sub)

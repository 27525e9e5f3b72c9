"""The DICOM node checks the *called* AE title (#31.4): an association addressed to another AE is rejected."""
from __future__ import annotations

import pytest
from pynetdicom import AE

from boneage.clinic.dicom_node import BoneAgeNode, Destination, NodeConfig
from pipelines.cli import free_loopback_port

pytestmark = pytest.mark.integration


def test_association_to_another_called_ae_is_rejected():
    port = free_loopback_port()
    node = BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 1), port=port), predictor=None)
    node.start()
    try:
        scu = AE(ae_title="PACS")
        scu.add_requested_context("1.2.840.10008.1.1")
        wrong = scu.associate("127.0.0.1", port, ae_title="SOMEONE_ELSE")
        assert wrong.is_rejected, "an association to another called AE title was accepted"
        right = scu.associate("127.0.0.1", port, ae_title="BONEAGE")
        assert right.is_established
        assert right.send_c_echo().Status == 0
        right.release()
    finally:
        node.stop()


def test_a_sop_instance_received_twice_is_assessed_once(hand_dx, data_dir):
    """#31.4: the same SOP instance sent twice (a PACS retry) is queued once: one result, not two."""
    from types import SimpleNamespace

    import pydicom
    import io

    data = hand_dx(data_dir / "test" / "4361.png")
    uid = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    node = BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 1)), predictor=None)
    event = SimpleNamespace(assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="PACS")),
                            request=SimpleNamespace(AffectedSOPInstanceUID=uid), encoded_dataset=lambda: data)
    assert node._on_store(event) == 0 and node._on_store(event) == 0
    assert node.jobs.qsize() == 1

"""The DICOM node checks the *called* AE title (#31.4): an association addressed to another AE is rejected."""
from __future__ import annotations

import pytest
from pynetdicom import AE

from boneage.clinic.dicom_node import BoneAgeNode, Destination, NodeConfig
from pipelines.cli import free_loopback_port

pytestmark = pytest.mark.unit


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

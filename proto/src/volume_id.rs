//! The volume id kubelet derives for a pod's inline CSI volume.

use sha2::{Digest, Sha256};

/// `csi-` and the hex SHA-256 of the pod UID followed by the volume's
/// name (`makeVolumeHandle` in kubelet's `pkg/volume/csi`): a volume id
/// names one volume of one pod.
pub fn inline_volume_id(pod_uid: &str, volume_name: &str) -> String {
    let mut h = Sha256::new();
    h.update(pod_uid.as_bytes());
    h.update(volume_name.as_bytes());
    format!("csi-{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::inline_volume_id;

    #[test]
    fn the_id_is_kubelets() {
        // `printf uid-1kcred | sha256sum`
        assert_eq!(
            inline_volume_id("uid-1", "kcred"),
            "csi-b17e73f2b87855a93dc9505152d10ef6c07ad6572e9b12c258ee4257b30ef2c4"
        );
    }
}

//! Where a realm's keys are administered: MIT kadmind, or Active Directory
//! (see `crate::ad`). The issuers and rotation speak to this one seam; the
//! two differ in one way that shows: kadmind keeps old key versions itself,
//! AD does not, so for AD the previous keys come from the stored keytab.

use crate::ad::AdClient;
use crate::keytab::Keytab;
use crate::names::Principal;

use super::{KadminClient, KadminError};

/// The realm's key administration backend (`[active_directory]` in the
/// config selects AD; MIT otherwise).
pub enum KeyAdmin {
    /// MIT kadmind, over one long-lived `kadmin` session.
    Mit(Box<KadminClient>),
    /// Active Directory, over LDAPS and the KDC's announced salts.
    Ad(Box<AdClient>),
}

impl KeyAdmin {
    /// The principal's keys for a first issue: extracted unchanged from
    /// kadmind, or a new password's keys in AD (AD cannot hand out existing
    /// keys).
    pub async fn extract_keytab(&self, principal: &Principal) -> Result<Keytab, KadminError> {
        match self {
            KeyAdmin::Mit(k) => k.extract_keytab(principal).await,
            KeyAdmin::Ad(ad) => ad.new_keys(principal).await,
        }
    }

    /// New keys, old ones kept for the grace period. MIT returns `None`
    /// (kadmind keeps both; re-extract); AD returns the new keytab, holding
    /// `current`'s older key versions too.
    pub async fn randomize_keep_old(
        &self,
        principal: &Principal,
        current: Option<&Keytab>,
    ) -> Result<Option<Keytab>, KadminError> {
        match self {
            KeyAdmin::Mit(k) => k.randomize_keep_old(principal).await.map(|()| None),
            KeyAdmin::Ad(ad) => ad.rotate(principal, current).await.map(Some),
        }
    }

    /// Ends a grace period: keys older than `keep_kvno` go. MIT returns
    /// `None` (re-extract); AD returns `current` without them.
    pub async fn purge_keys(
        &self,
        principal: &Principal,
        keep_kvno: u32,
        current: Option<&Keytab>,
    ) -> Result<Option<Keytab>, KadminError> {
        match self {
            KeyAdmin::Mit(k) => k.purge_keys(principal, keep_kvno).await.map(|()| None),
            KeyAdmin::Ad(ad) => ad.purge(principal, keep_kvno, current).map(Some),
        }
    }

    /// Opens the kadmin session ahead of use (nothing to open for AD).
    pub async fn warm_up(&self) -> Result<(), KadminError> {
        match self {
            KeyAdmin::Mit(k) => k.warm_up().await,
            KeyAdmin::Ad(_) => Ok(()),
        }
    }
}

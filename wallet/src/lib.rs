//! Hallmark's thin layer over bdk_wallet: a wallet per operator (descriptor derived from the
//! operator's secret), persisted through bdk's [`WalletPersister`] into any key-value store the
//! node provides (the operator's RocksDB), synced from bitcoind's RPC with bdk_bitcoind_rpc's
//! `Emitter`, and able to build, sign and broadcast OP_RETURN anchor transactions and fee bumps.
//!
//! Everything here is blocking (the RPC client is): call it from a blocking thread.

use std::sync::Arc;

use bdk_bitcoind_rpc::bitcoincore_rpc::{self, Auth, RpcApi};
use bdk_bitcoind_rpc::{Emitter, NO_EXPECTED_MEMPOOL_TXS};
use bdk_wallet::chain::Merge;
use bdk_wallet::{ChangeSet, KeychainKind, PersistedWallet, SignOptions, Wallet, WalletPersister};
use bitcoin::bip32::Xpriv;
use bitcoin::script::PushBytesBuf;
use bitcoin::{Address, Amount, FeeRate, Network, Transaction, Txid};

pub use bdk_bitcoind_rpc::bitcoincore_rpc::Client as RpcClient;

/// Where the wallet's change set is kept (the node implements it over RocksDB).
pub trait ChangeSetStore {
    /// The stored bytes, if any.
    fn load(&self) -> Result<Option<Vec<u8>>, String>;
    /// Replaces the stored bytes.
    fn save(&self, bytes: &[u8]) -> Result<(), String>;
}

/// bdk's persister over a [`ChangeSetStore`]: the aggregate change set, as JSON.
pub struct Persister<S>(pub S);

impl<S: ChangeSetStore> WalletPersister for Persister<S> {
    type Error = WalletError;

    fn initialize(persister: &mut Self) -> Result<ChangeSet, WalletError> {
        match persister.0.load().map_err(WalletError::Store)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| WalletError::Store(format!("corrupt wallet state: {e}"))),
            None => Ok(ChangeSet::default()),
        }
    }

    fn persist(persister: &mut Self, changeset: &ChangeSet) -> Result<(), WalletError> {
        let mut all = Self::initialize(persister)?;
        all.merge(changeset.clone());
        let bytes = serde_json::to_vec(&all).map_err(|e| WalletError::Store(e.to_string()))?;
        persister.0.save(&bytes).map_err(WalletError::Store)
    }
}

/// How to reach bitcoind.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// e.g. `http://127.0.0.1:18443`.
    pub url: String,
    /// RPC user and password, or a cookie file.
    pub auth: RpcAuth,
}

/// RPC credentials.
#[derive(Clone, Debug)]
pub enum RpcAuth {
    /// User and password.
    UserPass(String, String),
    /// Cookie file.
    Cookie(std::path::PathBuf),
}

impl RpcConfig {
    /// A client (cheap; no connection is made until a call).
    pub fn client(&self) -> Result<RpcClient, WalletError> {
        let auth = match &self.auth {
            RpcAuth::UserPass(u, p) => Auth::UserPass(u.clone(), p.clone()),
            RpcAuth::Cookie(p) => Auth::CookieFile(p.clone()),
        };
        RpcClient::new(&self.url, auth).map_err(WalletError::Rpc)
    }
}

/// Wallet failures.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// bitcoind RPC failed.
    #[error("bitcoind rpc: {0}")]
    Rpc(#[from] bitcoincore_rpc::Error),
    /// The store failed.
    #[error("wallet store: {0}")]
    Store(String),
    /// bdk said no.
    #[error("wallet: {0}")]
    Bdk(String),
    /// Not enough money.
    #[error("insufficient funds: {0}")]
    Funds(String),
}

impl WalletError {
    /// Whether bitcoind could not answer at all (down, unreachable, or still starting), as
    /// opposed to answering no.
    pub fn is_unavailable(&self) -> bool {
        use bitcoincore_rpc::jsonrpc::error::Error as J;
        match self {
            Self::Rpc(bitcoincore_rpc::Error::JsonRpc(J::Transport(_))) => true,
            // RPC_IN_WARMUP: bitcoind is loading.
            Self::Rpc(bitcoincore_rpc::Error::JsonRpc(J::Rpc(e))) => e.code == -28,
            _ => false,
        }
    }
}

fn bdk<E: std::fmt::Display>(e: E) -> WalletError {
    WalletError::Bdk(e.to_string())
}

/// The master key of an operator's wallet: derived from its secret through a tagged hash, so
/// the signing key is never used directly on chain.
pub fn master_key(secret: &[u8; 32], network: Network) -> Xpriv {
    let seed = hallmark_protocol::hash::tagged_hash("hallmark/v1/wallet-seed", &[secret]);
    Xpriv::new_master(network, &seed).expect("a 32-byte seed always yields a master key")
}

/// A Hallmark wallet.
pub struct HallmarkWallet<S: ChangeSetStore> {
    wallet: PersistedWallet<Persister<S>>,
    persister: Persister<S>,
    xprv: Xpriv,
    rpc: Arc<RpcClient>,
}

impl<S: ChangeSetStore> HallmarkWallet<S> {
    /// Opens (or creates) the wallet of `secret` on `network`, persisted in `store`.
    pub fn open(
        secret: &[u8; 32],
        network: Network,
        store: S,
        rpc: RpcClient,
    ) -> Result<Self, WalletError> {
        let xprv = master_key(secret, network);
        let coin = u32::from(network != Network::Bitcoin);
        let external = format!("wpkh({xprv}/84'/{coin}'/0'/0/*)");
        let internal = format!("wpkh({xprv}/84'/{coin}'/0'/1/*)");
        let mut persister = Persister(store);
        let loaded = Wallet::load()
            .descriptor(KeychainKind::External, Some(external.clone()))
            .descriptor(KeychainKind::Internal, Some(internal.clone()))
            .check_network(network)
            .load_wallet(&mut persister)
            .map_err(bdk)?;
        let wallet = match loaded {
            Some(w) => w,
            None => Wallet::create(external, internal)
                .network(network)
                .create_wallet(&mut persister)
                .map_err(bdk)?,
        };
        Ok(Self {
            wallet,
            persister,
            xprv,
            rpc: Arc::new(rpc),
        })
    }

    /// The RPC client.
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// Syncs from bitcoind (blocks since the last sync, then the mempool) and persists.
    pub fn sync(&mut self) -> Result<u32, WalletError> {
        let tip = self.wallet.latest_checkpoint();
        let start = tip.height();
        let mut emitter = Emitter::new(self.rpc.clone(), tip, start, NO_EXPECTED_MEMPOOL_TXS);
        let mut blocks = 0;
        while let Some(ev) = emitter.next_block()? {
            self.wallet
                .apply_block_connected_to(&ev.block, ev.block_height(), ev.connected_to())
                .map_err(bdk)?;
            blocks += 1;
        }
        let mempool = emitter.mempool()?;
        self.wallet.apply_unconfirmed_txs(mempool.update);
        self.wallet.apply_evicted_txs(mempool.evicted);
        self.wallet.persist(&mut self.persister)?;
        Ok(blocks)
    }

    /// A fresh receiving address (persisted, so it is never handed out twice).
    pub fn address(&mut self) -> Result<Address, WalletError> {
        let a = self
            .wallet
            .reveal_next_address(KeychainKind::External)
            .address;
        self.wallet.persist(&mut self.persister)?;
        Ok(a)
    }

    /// Confirmed plus trusted-pending balance.
    pub fn balance(&self) -> Amount {
        let b = self.wallet.balance();
        b.confirmed + b.trusted_pending
    }

    /// The fee rate to use: bitcoind's estimate for `target` blocks, never below `floor` sat/vB.
    pub fn fee_rate(&self, target: u16, floor_sat_vb: u64) -> FeeRate {
        let floor = FeeRate::from_sat_per_vb(floor_sat_vb).unwrap_or(FeeRate::BROADCAST_MIN);
        self.rpc
            .estimate_smart_fee(target, None)
            .ok()
            .and_then(|e| e.fee_rate)
            .and_then(|per_kvb| FeeRate::from_sat_per_vb(per_kvb.to_sat() / 1000))
            .map_or(floor, |f| f.max(floor))
    }

    fn sign_and_send(&mut self, mut psbt: bitcoin::Psbt) -> Result<Transaction, WalletError> {
        psbt.sign(&self.xprv, self.wallet.secp_ctx())
            .map_err(|(_, errs)| WalletError::Bdk(format!("signing: {errs:?}")))?;
        if !self
            .wallet
            .finalize_psbt(&mut psbt, SignOptions::default())
            .map_err(bdk)?
        {
            return Err(WalletError::Bdk(
                "transaction could not be finalized".into(),
            ));
        }
        let tx = psbt.extract_tx().map_err(bdk)?;
        self.rpc.send_raw_transaction(&tx)?;
        self.wallet.apply_unconfirmed_txs([(tx.clone(), now())]);
        self.wallet.persist(&mut self.persister)?;
        Ok(tx)
    }

    /// Builds, signs and broadcasts a transaction with one OP_RETURN output carrying `payload`
    /// (at most 80 bytes) and change back to the wallet. Signals RBF.
    pub fn send_op_return(
        &mut self,
        payload: &[u8],
        fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let data = PushBytesBuf::try_from(payload.to_vec())
            .map_err(|_| WalletError::Bdk("payload too long".into()))?;
        if payload.len() > 80 {
            return Err(WalletError::Bdk("OP_RETURN payload over 80 bytes".into()));
        }
        let psbt = {
            let mut b = self.wallet.build_tx();
            b.add_data(&data).fee_rate(fee_rate);
            b.finish().map_err(|e| WalletError::Funds(e.to_string()))?
        };
        self.sign_and_send(psbt)
    }

    /// Pays `outputs` in one transaction, plus an OP_RETURN `payload` (e.g. a sale binding).
    pub fn pay(
        &mut self,
        outputs: &[(bitcoin::ScriptBuf, Amount)],
        payload: Option<&[u8]>,
        fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let psbt = {
            let mut b = self.wallet.build_tx();
            for (s, a) in outputs {
                b.add_recipient(s.clone(), *a);
            }
            if let Some(p) = payload {
                let data = PushBytesBuf::try_from(p.to_vec())
                    .map_err(|_| WalletError::Bdk("payload too long".into()))?;
                b.add_data(&data);
            }
            b.fee_rate(fee_rate);
            b.finish().map_err(|e| WalletError::Funds(e.to_string()))?
        };
        self.sign_and_send(psbt)
    }

    /// Replaces an unconfirmed transaction of ours with the same outputs at `fee_rate` (RBF).
    pub fn bump_fee(&mut self, txid: Txid, fee_rate: FeeRate) -> Result<Transaction, WalletError> {
        let psbt = {
            let mut b = self.wallet.build_fee_bump(txid).map_err(bdk)?;
            b.fee_rate(fee_rate);
            b.finish().map_err(|e| WalletError::Funds(e.to_string()))?
        };
        self.sign_and_send(psbt)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The few raw RPCs the node needs beyond the wallet, with this crate's error type.
pub trait RpcApiExt {
    /// Best chain height.
    fn block_count(&self) -> Result<u64, WalletError>;
    /// Hash of the best-chain block at `height`.
    fn block_hash(&self, height: u64) -> Result<bitcoin::BlockHash, WalletError>;
    /// A full block.
    fn block(&self, hash: &bitcoin::BlockHash) -> Result<bitcoin::Block, WalletError>;
    /// Broadcasts a transaction.
    fn send_tx(&self, tx: &Transaction) -> Result<Txid, WalletError>;
    /// Transactions in the mempool.
    fn mempool(&self) -> Result<Vec<Txid>, WalletError>;
}

impl RpcApiExt for RpcClient {
    fn block_count(&self) -> Result<u64, WalletError> {
        Ok(self.get_block_count()?)
    }
    fn block_hash(&self, height: u64) -> Result<bitcoin::BlockHash, WalletError> {
        Ok(self.get_block_hash(height)?)
    }
    fn block(&self, hash: &bitcoin::BlockHash) -> Result<bitcoin::Block, WalletError> {
        Ok(self.get_block(hash)?)
    }
    fn send_tx(&self, tx: &Transaction) -> Result<Txid, WalletError> {
        Ok(self.send_raw_transaction(tx)?)
    }
    fn mempool(&self) -> Result<Vec<Txid>, WalletError> {
        Ok(self.get_raw_mempool()?)
    }
}

/// The first receiving address of the wallet of `secret` (what to fund an operator with),
/// computed without touching any store.
pub fn first_address(secret: &[u8; 32], network: Network) -> Address {
    let xprv = master_key(secret, network);
    let coin = u32::from(network != Network::Bitcoin);
    let external = format!("wpkh({xprv}/84'/{coin}'/0'/0/*)");
    let internal = format!("wpkh({xprv}/84'/{coin}'/0'/1/*)");
    let wallet = Wallet::create(external, internal)
        .network(network)
        .create_wallet_no_persist()
        .expect("descriptors built from a valid xprv are valid");
    wallet.peek_address(KeychainKind::External, 0).address
}

/// Raw-JSON RPCs (bitcoincore-rpc's typed results do not all parse against recent Bitcoin Core).
pub trait RpcClientRaw {
    /// A transaction (needs `-txindex` unless it is in the mempool) and its block, if confirmed.
    fn raw_tx(&self, txid: &Txid)
        -> Result<(Transaction, Option<bitcoin::BlockHash>), WalletError>;
    /// The height of a block.
    fn block_height(&self, hash: &bitcoin::BlockHash) -> Result<u32, WalletError>;
}

impl RpcClientRaw for RpcClient {
    fn raw_tx(
        &self,
        txid: &Txid,
    ) -> Result<(Transaction, Option<bitcoin::BlockHash>), WalletError> {
        let v: serde_json::Value = self.call(
            "getrawtransaction",
            &[serde_json::json!(txid.to_string()), serde_json::json!(true)],
        )?;
        let hex = v["hex"]
            .as_str()
            .ok_or_else(|| WalletError::Bdk("getrawtransaction: no hex".into()))?;
        let bytes = <Vec<u8> as bitcoin::hex::FromHex>::from_hex(hex).map_err(bdk)?;
        let tx: Transaction = bitcoin::consensus::deserialize(&bytes).map_err(bdk)?;
        let block = v["blockhash"]
            .as_str()
            .map(|s| s.parse())
            .transpose()
            .map_err(bdk)?;
        Ok((tx, block))
    }

    fn block_height(&self, hash: &bitcoin::BlockHash) -> Result<u32, WalletError> {
        let v: serde_json::Value = self.call(
            "getblockheader",
            &[serde_json::json!(hash.to_string()), serde_json::json!(true)],
        )?;
        v["height"]
            .as_u64()
            .map(|h| h as u32)
            .ok_or_else(|| WalletError::Bdk("getblockheader: no height".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Clone, Default)]
    struct Mem(Rc<RefCell<Option<Vec<u8>>>>);

    impl ChangeSetStore for Mem {
        fn load(&self) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.borrow().clone())
        }
        fn save(&self, b: &[u8]) -> Result<(), String> {
            *self.0.borrow_mut() = Some(b.to_vec());
            Ok(())
        }
    }

    fn offline_rpc() -> RpcClient {
        RpcConfig {
            url: "http://127.0.0.1:1".into(),
            auth: RpcAuth::UserPass("u".into(), "p".into()),
        }
        .client()
        .unwrap()
    }

    #[test]
    fn persists_revealed_addresses_across_reopen() {
        let store = Mem::default();
        let secret = [7u8; 32];
        let first = {
            let mut w =
                HallmarkWallet::open(&secret, Network::Regtest, store.clone(), offline_rpc())
                    .unwrap();
            w.address().unwrap()
        };
        let mut w = HallmarkWallet::open(&secret, Network::Regtest, store, offline_rpc()).unwrap();
        let second = w.address().unwrap();
        assert_ne!(
            first, second,
            "a reopened wallet continues after the revealed address"
        );
        assert!(first.to_string().starts_with("bcrt1q"));
        // Another secret is another wallet.
        let mut other =
            HallmarkWallet::open(&[8u8; 32], Network::Regtest, Mem::default(), offline_rpc())
                .unwrap();
        assert_ne!(other.address().unwrap(), first);
    }
}

/*
 * h5splayer.js - h5gate's browser player, API-compatible with H5Stream's h5splayer.js.
 *
 *   var player = H5sPlayerCreate(conf);   // or new H5sPlayerWS(conf) / new H5sPlayerHls(conf)
 *   player.connect();  ...  player.disconnect();
 *
 * conf = {
 *   videoid: 'id of a <video>'  | videodom: <video element>,
 *   protocol: window.location.protocol ('http:' | 'https:'),
 *   host: window.location.host ('ip:port'),
 *   rootpath: '/',                       all URLs are rootpath + 'api/v1/...'
 *   token: 'stream token',
 *   streamprofile: 'main' | 'sub' | profile token   (default 'main'),
 *   hlsver: 'v1' (MPEG-TS) | 'v2' (fMP4)           (default 'v1'),
 *   session: 'session from /api/v1/Login',
 *   consolelog: 'true' | 'false',        debug logging to the browser console
 *   muted: 'true' | 'false',             h5gate extension, default 'true' (autoplay needs muted)
 *   pbconf: {                            optional: recording playback instead of live
 *     begintime, endtime, autoplay: 'true'|'false', serverpb: 'true'|'false',
 *     filename, callback: function (text, userdata), userdata
 *   }
 * }
 * All booleans in conf are the strings 'true' / 'false', as in the vendor's API.
 *
 * Every player also has stats() -> {state, framesDecoded, currentTime, bufferedEnd, latency,
 * reconnects, mime, error}, and fires a 'h5serror' CustomEvent (detail.message) on the <video>
 * when something the viewer should know about goes wrong (unsupported codec, no HLS support).
 *
 * Plain ES2017, no modules, no build step. The only optional dependency is hls.js (global Hls),
 * used by H5sPlayerHls when the browser has MediaSource.
 */

var gStrH5gatePlayerVersion = 'h5gate-h5splayer 0.1.0';

/* ---------------------------------------------------------------- shared helpers */

function H5sConfBool(value, dflt) {
    if (value === undefined || value === null || value === '') {
        return dflt;
    }
    return value === true || value === 'true';
}

function H5sGetVideoElement(conf) {
    if (conf.videodom) {
        return conf.videodom;
    }
    var video = document.getElementById(conf.videoid);
    if (!video) {
        throw new Error('h5splayer: no <video> with id ' + conf.videoid);
    }
    return video;
}

/* "http:" / "https:" + "//" + host + rootpath; the WebSocket form swaps the scheme. */
function H5sHttpBase(conf) {
    var protocol = conf.protocol || window.location.protocol;
    var host = conf.host || window.location.host;
    return protocol + '//' + host + (conf.rootpath || '/');
}

function H5sWsBase(conf) {
    var protocol = conf.protocol || window.location.protocol;
    var host = conf.host || window.location.host;
    return (protocol === 'https:' ? 'wss://' : 'ws://') + host + (conf.rootpath || '/');
}

function H5sPosterUrl(conf, update) {
    return H5sHttpBase(conf) + 'api/v1/GetImage?token=' + encodeURIComponent(conf.token) +
        '&session=' + encodeURIComponent(conf.session || '') + '&update=' + update;
}

function H5sLastBufferedEnd(ranges) {
    return ranges && ranges.length ? ranges.end(ranges.length - 1) : 0;
}

function H5sFramesDecoded(video) {
    if (video.getVideoPlaybackQuality) {
        return video.getVideoPlaybackQuality().totalVideoFrames;
    }
    return video.webkitDecodedFrameCount || 0;
}

function H5sPlayerStats(player, mime) {
    var video = player._video;
    var end = H5sLastBufferedEnd(video.buffered);
    return {
        state: player._state,
        framesDecoded: H5sFramesDecoded(video),
        currentTime: video.currentTime,
        bufferedEnd: end,
        latency: end ? Math.max(0, end - video.currentTime) : 0,
        reconnects: player._reconnects,
        mime: mime,
        error: player._error
    };
}

function H5sLogger(conf, name) {
    var enabled = H5sConfBool(conf.consolelog, false);
    return function () {
        if (enabled) {
            var args = Array.prototype.slice.call(arguments);
            args.unshift('[' + name + ' ' + conf.token + ']');
            console.log.apply(console, args);
        }
    };
}

function H5sReportError(player, message) {
    player._error = message;
    console.warn('[h5splayer ' + player._conf.token + '] ' + message);
    try {
        player._video.dispatchEvent(new CustomEvent('h5serror', { detail: { message: message } }));
    } catch (e) {
        /* very old browsers without CustomEvent: the console warning is enough */
    }
}

/* play() returns a promise that rejects when autoplay is refused; never leave it unhandled. */
function H5sPlay(player) {
    var video = player._video;
    var result;
    try {
        result = video.play();
    } catch (e) {
        return;
    }
    if (result && result.catch) {
        result.catch(function (err) {
            if (err && err.name === 'NotAllowedError' && !video.muted) {
                player._log('autoplay refused with sound, retrying muted');
                video.muted = true;
                video.play().catch(function () { /* user gesture needed */ });
            }
        });
    }
}

/* ---------------------------------------------------------------- H5sPlayerWS: fMP4 over WebSocket */

var H5S_WS_RECONNECT_MS = 1000;
/* consecutive attempts that brought no media back off: 1 s, 1 s, 1 s, 2 s, 3 s, then 5 s */
var H5S_WS_BADCODEC_RECONNECT_MS = 5000;
var H5S_WS_TICK_MS = 500;
var H5S_WS_TRIM_MS = 10000;
var H5S_WS_KEEP_BEHIND_S = 10;      /* trim media older than currentTime - this */
var H5S_WS_STALL_MS = 6000;         /* buffered end unchanged this long = stalled */
var H5S_WS_STUCK_JUMP_MS = 3000;    /* playing but currentTime frozen this long: jump to the live edge */
var H5S_WS_STUCK_MS = 6000;         /* ... still frozen this long: reconnect */
var H5S_WS_FIRST_DATA_MS = 10000;   /* no media at all this long after (re)connecting = stalled */
var H5S_WS_MAX_QUEUE = 600;         /* pending fragments; more means the decoder is stuck */
var H5S_WS_PRIME_DELAY_MS = 200;    /* start playing this long after the first media is buffered */
var H5S_LIVE_START_BEHIND_S = 0.1;  /* first jump: this far behind the newest frame */
var H5S_LIVE_JUMP_S = 1.5;          /* further behind than this: jump ... */
var H5S_LIVE_JUMP_TO_S = 0.2;       /* ... to this far behind the newest frame */
var H5S_LIVE_SETTLE_JUMP_S = 0.5;   /* jump threshold during the first seconds after (re)connecting */
var H5S_LIVE_SETTLE_MS = 3000;
var H5S_LIVE_CATCHUP_S = 0.4;       /* further behind than this: play a little faster */
var H5S_LIVE_CATCHUP_RATE = 1.1;

function H5sPlayerWS(conf) {
    H5sSocketPlayerInit(this, conf, 'H5sPlayerWS');
    this._ms = null;
    this._msUrl = '';
    this._sb = null;
    this._mime = '';
    this._queue = [];
    this._primed = false;
    this._primeTimer = null;
}

H5sPlayerWS.prototype.wsUrl = function () {
    return H5sWsBase(this._conf) + 'api/v1/h5swsapi?' + H5sStreamQuery(this._conf, this._playback);
};

H5sPlayerWS.prototype.disconnect = function () {
    this._stopped = true;
    if (this._reconnectTimer) {
        clearTimeout(this._reconnectTimer);
        this._reconnectTimer = null;
    }
    this._teardown();
    this._video.removeAttribute('src');
    try {
        this._video.load();
    } catch (e) { /* nothing to release */ }
    this._state = 'closed';
    this._log('disconnected');
};

H5sPlayerWS.prototype.stats = function () {
    return H5sPlayerStats(this, this._mime);
};

/* One connection attempt: new MediaSource, then (once it is open) a new WebSocket. */
H5sPlayerWS.prototype._start = function () {
    var self = this;
    var video = this._video;
    this._state = this._reconnects ? 'reconnecting' : 'connecting';
    this._mime = '';
    this._queue = [];
    this._primed = false;
    this._sb = null;
    this._lastEnd = -1;
    this._lastEndChange = Date.now();
    this._lastTime = -1;
    this._lastTimeChange = Date.now();
    this._stuckJumped = false;
    this._startedAt = Date.now();

    this._posterUpdate += 1;
    video.poster = H5sPosterUrl(this._conf, this._posterUpdate);

    if (!window.MediaSource) {
        H5sReportError(this, 'this browser has no MediaSource; use H5sPlayerHls');
        this._state = 'error';
        return;
    }
    var ms = new MediaSource();
    this._ms = ms;
    this._msUrl = URL.createObjectURL(ms);
    ms.addEventListener('sourceopen', function () {
        if (self._ms === ms && !self._stopped) {
            self._openSocket();
        }
    });
    video.src = this._msUrl;

    this._timers.push(setInterval(function () { self._tick(); }, H5S_WS_TICK_MS));
    this._timers.push(setInterval(function () { self._trim(); }, H5S_WS_TRIM_MS));
};

H5sPlayerWS.prototype._openSocket = function () {
    this._openSignalling(true, null, { cmd: 'H5_KEEPALIVE' }, H5S_WS_RECONNECT_MS);
};

H5sPlayerWS.prototype._onMessage = function (data) {
    if (typeof data === 'string') {
        var pb = this._conf.pbconf;
        if (pb && typeof pb.callback === 'function') {
            pb.callback(data, pb.userdata);
        } else {
            this._log('text message', data);
        }
        return;
    }
    if (!this._mime) {
        this._onCodec(new Uint8Array(data));
        return;
    }
    if (!this._sb) {
        return; /* codec refused; a reconnect is already scheduled */
    }
    this._queue.push(data);
    if (this._queue.length > H5S_WS_MAX_QUEUE) {
        H5sReportError(this, 'media queue overflow, reconnecting');
        this._scheduleReconnect(H5S_WS_RECONNECT_MS);
        return;
    }
    this._pump();
};

/* The server's first binary message is the full MIME type, e.g. video/mp4; codecs="avc1.640029". */
H5sPlayerWS.prototype._onCodec = function (bytes) {
    var self = this;
    var mime = '';
    for (var i = 0; i < bytes.length; i++) {
        mime += String.fromCharCode(bytes[i]);
    }
    mime = mime.replace(/\0+$/, '').trim();
    this._mime = mime;
    this._log('codec', mime);
    if (!MediaSource.isTypeSupported(mime)) {
        H5sReportError(this, 'this browser cannot play ' + mime);
        this._state = 'error';
        this._scheduleReconnect(H5S_WS_BADCODEC_RECONNECT_MS);
        return;
    }
    try {
        this._sb = this._ms.addSourceBuffer(mime);
    } catch (e) {
        H5sReportError(this, 'addSourceBuffer(' + mime + ') failed: ' + e.message);
        this._state = 'error';
        this._scheduleReconnect(H5S_WS_BADCODEC_RECONNECT_MS);
        return;
    }
    var sb = this._sb;
    sb.addEventListener('updateend', function () {
        if (self._sb === sb) {
            self._onUpdateEnd();
        }
    });
    sb.addEventListener('error', function () {
        if (self._sb === sb) {
            H5sReportError(self, 'SourceBuffer error, reconnecting');
            self._scheduleReconnect(H5S_WS_RECONNECT_MS);
        }
    });
};

H5sPlayerWS.prototype._pump = function () {
    var sb = this._sb;
    if (!sb || sb.updating || !this._queue.length) {
        return;
    }
    var data;
    if (this._queue.length === 1) {
        data = this._queue.shift();
    } else {
        /* several fragments waiting (the server's GOP burst, or a busy tab): one append is much
         * cheaper than many, and fMP4 fragments may be concatenated freely */
        var total = 0;
        this._queue.forEach(function (buf) { total += buf.byteLength; });
        data = new Uint8Array(total);
        var offset = 0;
        this._queue.forEach(function (buf) {
            data.set(new Uint8Array(buf), offset);
            offset += buf.byteLength;
        });
        this._queue = [];
    }
    try {
        sb.appendBuffer(data);
    } catch (e) {
        H5sReportError(this, 'appendBuffer failed (' + e.name + '), reconnecting');
        this._scheduleReconnect(H5S_WS_RECONNECT_MS);
    }
};

H5sPlayerWS.prototype._onUpdateEnd = function () {
    var self = this;
    if (!this._primed && !this._primeTimer && this._video.buffered.length) {
        /* the server starts with a burst of the cached GOP; let it land, then start at its end */
        this._primeTimer = setTimeout(function () {
            self._primeTimer = null;
            if (!self._stopped && self._sb) {
                self._prime();
            }
        }, H5S_WS_PRIME_DELAY_MS);
    }
    this._pump();
};

/* First media is buffered (and the server's burst of cached frames has been appended):
 * live jumps to the newest frame instead of playing the cached GOP slowly. */
H5sPlayerWS.prototype._prime = function () {
    var video = this._video;
    var ranges = video.buffered;
    if (!ranges.length) {
        return;
    }
    this._primed = true;
    this._primedAt = Date.now();
    this._state = 'playing';
    this._error = '';
    var last = ranges.length - 1;
    try {
        if (this._playback) {
            if (video.currentTime < ranges.start(0)) {
                video.currentTime = ranges.start(0);
            }
        } else {
            video.currentTime = Math.max(ranges.start(last), ranges.end(last) - H5S_LIVE_START_BEHIND_S);
        }
    } catch (e) {
        this._log('initial seek failed', e);
    }
    this._log('first media buffered', ranges.start(last), ranges.end(last));
    H5sPlay(this);
};

/* Every 500 ms: stall detection and latency control (live only). */
H5sPlayerWS.prototype._tick = function () {
    if (this._stopped || this._playback) {
        return;
    }
    var video = this._video;
    var now = Date.now();
    var ranges = video.buffered;
    var end = H5sLastBufferedEnd(ranges);

    if (end !== this._lastEnd) {
        this._lastEnd = end;
        this._lastEndChange = now;
    }
    if (!this._primed) {
        if (now - this._startedAt > H5S_WS_FIRST_DATA_MS) {
            this._log('no media after', H5S_WS_FIRST_DATA_MS, 'ms, reconnecting');
            this._scheduleReconnect(H5S_WS_RECONNECT_MS);
        }
        return;
    }
    if (now - this._lastEndChange > H5S_WS_STALL_MS) {
        this._log('stalled (buffered end unchanged), reconnecting');
        this._scheduleReconnect(H5S_WS_RECONNECT_MS);
        return;
    }
    if (video.currentTime !== this._lastTime || video.paused) {
        this._lastTime = video.currentTime;
        this._lastTimeChange = now;
        this._stuckJumped = false;
    } else if (now - this._lastTimeChange > H5S_WS_STUCK_MS) {
        this._log('playback frozen although media arrives, reconnecting');
        this._scheduleReconnect(H5S_WS_RECONNECT_MS);
        return;
    } else if (now - this._lastTimeChange > H5S_WS_STUCK_JUMP_MS && !this._stuckJumped && ranges.length) {
        /* a seek that never completes or a hole the decoder will not cross: restart at the live edge */
        this._stuckJumped = true;
        this._log('playback frozen, jumping to the newest buffered range');
        video.currentTime = Math.max(ranges.start(ranges.length - 1), end - H5S_LIVE_JUMP_TO_S);
        this._lastTime = video.currentTime;
        return;
    }
    if (!ranges.length || video.seeking) {
        return;
    }
    var behind = end - video.currentTime;
    var inRange = false;
    for (var i = 0; i < ranges.length; i++) {
        if (video.currentTime >= ranges.start(i) - 0.05 && video.currentTime < ranges.end(i)) {
            inRange = true;
            break;
        }
    }
    var jumpAt = now - this._primedAt < H5S_LIVE_SETTLE_MS ? H5S_LIVE_SETTLE_JUMP_S : H5S_LIVE_JUMP_S;
    if (behind > jumpAt || (!inRange && behind > 0)) {
        /* far behind, or stuck in a gap between buffered ranges */
        var target = end - H5S_LIVE_JUMP_TO_S;
        var lastStart = ranges.start(ranges.length - 1);
        this._log('jump to live edge, was behind', behind.toFixed(2), 's');
        video.currentTime = Math.max(target, lastStart);
        video.playbackRate = 1.0;
    } else if (behind > H5S_LIVE_CATCHUP_S) {
        if (video.playbackRate !== H5S_LIVE_CATCHUP_RATE) {
            video.playbackRate = H5S_LIVE_CATCHUP_RATE;
        }
    } else if (video.playbackRate !== 1.0) {
        video.playbackRate = 1.0;
    }
};

/* Every 10 s: drop media older than currentTime - 10 s so the SourceBuffer does not fill up. */
H5sPlayerWS.prototype._trim = function () {
    var sb = this._sb;
    if (this._stopped || !sb || sb.updating || !this._ms || this._ms.readyState !== 'open') {
        return;
    }
    var ranges;
    try {
        ranges = sb.buffered;
    } catch (e) {
        return;
    }
    var upTo = this._video.currentTime - H5S_WS_KEEP_BEHIND_S;
    if (ranges.length && upTo > ranges.start(0)) {
        try {
            sb.remove(ranges.start(0), upTo);
        } catch (e) {
            this._log('trim failed', e);
        }
    }
};

H5sPlayerWS.prototype._teardown = function () {
    this._timers.forEach(function (t) { clearInterval(t); });
    this._timers = [];
    clearTimeout(this._primeTimer);
    this._primeTimer = null;
    var ws = this._ws;
    this._ws = null;
    if (ws) {
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        try {
            ws.close();
        } catch (e) { /* already closed */ }
    }
    this._sb = null;
    this._queue = [];
    this._ms = null;
    if (this._msUrl) {
        URL.revokeObjectURL(this._msUrl);
        this._msUrl = '';
    }
};

/* ---------------------------------------------------------------- H5sPlayerHls: HLS (hls.js or native) */

var H5S_HLS_CHECK_MS = 3000;
var H5S_HLS_STALL_CHECKS = 3;       /* currentTime unchanged more than this many checks = reload */
var H5S_HLS_RELOAD_MS = 1000;
var H5S_CMN_KEEPALIVE_MS = 1000;
var H5S_CMN_RECONNECT_MS = 3000;

function H5sPlayerHls(conf) {
    this._conf = conf;
    this._video = H5sGetVideoElement(conf);
    this._log = H5sLogger(conf, 'H5sPlayerHls');
    this._state = 'idle';
    this._error = '';
    this._reconnects = 0;
    this._posterUpdate = 0;
    this._stopped = true;
    this._hls = null;
    this._checkTimer = null;
    this._reloadTimer = null;
    this._cmnWs = null;
    this._cmnTimer = null;
    this._cmnReconnectTimer = null;
    this._video.muted = H5sConfBool(conf.muted, true);
    this._video.playsInline = true;
}

H5sPlayerHls.prototype.hlsUrl = function () {
    var conf = this._conf;
    return H5sHttpBase(conf) + 'hls/' + (conf.hlsver || 'v1') + '/' + encodeURIComponent(conf.token) +
        '/hls.m3u8?session=' + encodeURIComponent(conf.session || '');
};

H5sPlayerHls.prototype.cmnUrl = function () {
    var conf = this._conf;
    return H5sWsBase(conf) + 'api/v1/h5swscmnapi?token=' + encodeURIComponent(conf.token) +
        '&session=' + encodeURIComponent(conf.session || '');
};

H5sPlayerHls.prototype.connect = function () {
    if (!this._stopped) {
        return;
    }
    var self = this;
    this._stopped = false;
    this._openCmn();
    this._start();
    this._lastTime = -1;
    this._sameCount = 0;
    this._checkTimer = setInterval(function () { self._check(); }, H5S_HLS_CHECK_MS);
};

H5sPlayerHls.prototype.disconnect = function () {
    this._stopped = true;
    clearInterval(this._checkTimer);
    clearTimeout(this._reloadTimer);
    this._checkTimer = this._reloadTimer = null;
    this._stopMedia();
    this._closeCmn();
    this._state = 'closed';
    this._log('disconnected');
};

H5sPlayerHls.prototype.stats = function () {
    var mime = this._hls ? 'application/vnd.apple.mpegurl (hls.js)' : 'application/vnd.apple.mpegurl';
    return H5sPlayerStats(this, mime);
};

H5sPlayerHls.prototype._start = function () {
    var self = this;
    var video = this._video;
    var url = this.hlsUrl();
    this._state = this._reconnects ? 'reconnecting' : 'connecting';
    this._posterUpdate += 1;
    video.poster = H5sPosterUrl(this._conf, this._posterUpdate);
    this._log('loading', url);

    var onPlaying = function () {
        video.removeEventListener('playing', onPlaying);
        if (!self._stopped) {
            self._state = 'playing';
            self._error = '';
            self._catchUp();
        }
    };
    video.addEventListener('playing', onPlaying);
    this._onPlaying = onPlaying;

    if (window.Hls && window.Hls.isSupported()) {
        /* v2 is LL-HLS (parts, blocking reload): hls.js then plays the playlist's PART-HOLD-BACK behind
         * the source (a liveSync* setting would override that) and catches up a little when it falls
         * behind; v1 (MPEG-TS) has no parts and plays two segments behind. */
        var hlsConf = {
            enableWorker: true,
            manifestLoadingMaxRetry: 2,
            levelLoadingMaxRetry: 2,
            fragLoadingMaxRetry: 2
        };
        if ((this._conf.hlsver || 'v1') === 'v2') {
            hlsConf.lowLatencyMode = true;
            hlsConf.maxLiveSyncPlaybackRate = 1.1;
        } else {
            hlsConf.lowLatencyMode = false;
            hlsConf.liveSyncDurationCount = 2;
        }
        var hls = new window.Hls(hlsConf);
        this._hls = hls;
        hls.on(window.Hls.Events.MANIFEST_PARSED, function () {
            H5sPlay(self);
        });
        hls.on(window.Hls.Events.ERROR, function (event, data) {
            if (self._hls !== hls) {
                return;
            }
            self._log('hls.js error', data.type, data.details, data.fatal ? '(fatal)' : '');
            if (data.fatal) {
                self._reload();
            }
        });
        hls.loadSource(url);
        hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
        video.src = url;
        H5sPlay(this);
    } else {
        H5sReportError(this, 'this browser cannot play HLS (no MediaSource, no native HLS)');
        this._state = 'error';
    }
};

H5sPlayerHls.prototype._stopMedia = function () {
    var video = this._video;
    if (this._onPlaying) {
        video.removeEventListener('playing', this._onPlaying);
        this._onPlaying = null;
    }
    if (this._hls) {
        var hls = this._hls;
        this._hls = null;
        try {
            hls.destroy();
        } catch (e) { /* already gone */ }
    }
    video.removeAttribute('src');
    try {
        video.load();
    } catch (e) { /* nothing loaded */ }
};

H5sPlayerHls.prototype._reload = function () {
    var self = this;
    if (this._stopped || this._reloadTimer) {
        return;
    }
    this._stopMedia();
    this._state = 'reconnecting';
    this._reloadTimer = setTimeout(function () {
        self._reloadTimer = null;
        if (!self._stopped) {
            self._reconnects += 1;
            self._lastTime = -1;
            self._sameCount = 0;
            self._start();
        }
    }, H5S_HLS_RELOAD_MS);
};

/* Every 3 s: currentTime unchanged more than 3 times in a row -> reload the playlist. */
/* LL-HLS: hls.js starts at the keyframe before its target position, up to a GOP further back than the
 * playlist's PART-HOLD-BACK, and a stall adds to that; once playing, jump forward to its live sync
 * position when that is already buffered (no new download, no visible gap) and well ahead. */
H5sPlayerHls.prototype._catchUp = function () {
    var hls = this._hls;
    var video = this._video;
    if (!hls || !hls.lowLatencyMode || hls.targetLatency === null || hls.liveSyncPosition === null) {
        return;
    }
    var target = hls.liveSyncPosition;
    if (hls.latency < hls.targetLatency + 0.5 || target <= video.currentTime) {
        return;
    }
    for (var i = 0; i < video.buffered.length; i++) {
        if (video.buffered.start(i) <= target && target < video.buffered.end(i)) {
            this._log('catching up with the live edge', (target - video.currentTime).toFixed(2), 's');
            video.currentTime = target;
            return;
        }
    }
};

H5sPlayerHls.prototype._check = function () {
    var video = this._video;
    if (this._stopped || this._reloadTimer) {
        return;
    }
    this._catchUp();
    if (video.paused && video.readyState >= 3 /* HAVE_FUTURE_DATA: paused by the viewer */) {
        this._sameCount = 0;
        return;
    }
    if (video.currentTime === this._lastTime) {
        this._sameCount += 1;
        if (this._sameCount > H5S_HLS_STALL_CHECKS) {
            this._log('stalled, reloading');
            this._reload();
        }
    } else {
        this._lastTime = video.currentTime;
        this._sameCount = 0;
    }
};

/* The command socket keeps an on-demand source alive while HLS is watched; replies are ignored. */
H5sPlayerHls.prototype._openCmn = function () {
    var self = this;
    var ws;
    try {
        ws = new WebSocket(this.cmnUrl());
    } catch (e) {
        this._log('cannot open command socket', e);
        return;
    }
    this._cmnWs = ws;
    ws.onopen = function () {
        self._cmnTimer = setInterval(function () {
            if (ws.readyState === WebSocket.OPEN) {
                ws.send(JSON.stringify({ type: 'keepalive' }));
            }
        }, H5S_CMN_KEEPALIVE_MS);
    };
    ws.onmessage = function () { /* ignored, as in the vendor's player */ };
    ws.onerror = function () { /* onclose follows */ };
    ws.onclose = function () {
        if (self._cmnWs !== ws) {
            return;
        }
        clearInterval(self._cmnTimer);
        self._cmnTimer = null;
        self._cmnWs = null;
        if (!self._stopped) {
            self._cmnReconnectTimer = setTimeout(function () {
                self._cmnReconnectTimer = null;
                if (!self._stopped) {
                    self._openCmn();
                }
            }, H5S_CMN_RECONNECT_MS);
        }
    };
};

H5sPlayerHls.prototype._closeCmn = function () {
    clearInterval(this._cmnTimer);
    clearTimeout(this._cmnReconnectTimer);
    this._cmnTimer = this._cmnReconnectTimer = null;
    var ws = this._cmnWs;
    this._cmnWs = null;
    if (ws) {
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        try {
            ws.close();
        } catch (e) { /* already closed */ }
    }
};

/* ---------------------------------------------------------------- H5sPlayerCreate: pick a player */

/* ------------------------------------------------------------------ H5sPlayerRTC
 * Live (and recorded) video over WebRTC with H5Stream's signalling (h5srtcapi): the server makes the
 * offer. conf as for H5sPlayerWS, plus the vendor's rtcengine ('v2' -> h5srtcapi2) and h5gate's
 * audio ('false' asks for video only, so the server transcodes no audio for this viewer).
 * Sends {"type":"open"} then {"type":"keepalive"} every second; takes "iceserver" and "offer",
 * answers with "answer" and trickles "remoteice"; other server JSON goes to pbconf.callback.
 * stats() adds width, height and packetsLost; getStats() resolves to the RTCStatsReport. */

var H5S_RTC_RECONNECT_MS = 1000;
var H5S_RTC_STATS_MS = 1000;
var H5S_RTC_FIRST_FRAME_MS = 10000; /* no frame decoded this long after (re)connecting: reconnect */
var H5S_RTC_STALL_MS = 6000;        /* frames stopped being decoded this long: reconnect (live only) */

function H5sPlayerRTC(conf) {
    H5sSocketPlayerInit(this, conf, 'H5sPlayerRTC');
    this._pc = null;
    this._rtcConfig = null;
    this._playing = false;
    this._stats = { framesDecoded: 0, mime: '', width: 0, height: 0, packetsLost: 0, latency: 0 };
    this._video.autoplay = true;
}

H5sPlayerRTC.prototype.wsUrl = function () {
    var conf = this._conf;
    var path = conf.rtcengine === 'v2' ? 'api/v1/h5srtcapi2?' : 'api/v1/h5srtcapi?';
    var url = H5sWsBase(conf) + path + H5sStreamQuery(conf, this._playback);
    return H5sConfBool(conf.audio, true) ? url : url + '&audio=false';
};

H5sPlayerRTC.prototype.disconnect = function () {
    this._stopped = true;
    if (this._reconnectTimer) {
        clearTimeout(this._reconnectTimer);
        this._reconnectTimer = null;
    }
    this._teardown();
    this._state = 'closed';
    this._log('disconnected');
};

H5sPlayerRTC.prototype.stats = function () {
    var s = this._stats;
    return {
        state: this._state,
        framesDecoded: s.framesDecoded,
        currentTime: this._video.currentTime,
        bufferedEnd: 0,
        latency: s.latency,
        reconnects: this._reconnects,
        mime: s.mime,
        error: this._error,
        width: s.width,
        height: s.height,
        packetsLost: s.packetsLost
    };
};

H5sPlayerRTC.prototype.getStats = function () {
    return this._pc ? this._pc.getStats() : Promise.resolve(null);
};

/* One connection attempt: a new signalling socket; the peer connection comes with the server's offer. */
H5sPlayerRTC.prototype._start = function () {
    var self = this;
    this._state = this._reconnects ? 'reconnecting' : 'connecting';
    this._playing = false;
    this._rtcConfig = null;
    this._startedAt = Date.now();
    this._lastFrames = 0;
    this._lastFramesChange = Date.now();
    this._stats.framesDecoded = 0;
    this._posterUpdate += 1;
    this._video.poster = H5sPosterUrl(this._conf, this._posterUpdate);

    if (!window.RTCPeerConnection) {
        H5sReportError(this, 'this browser has no WebRTC; use H5sPlayerWS or H5sPlayerHls');
        this._state = 'error';
        return;
    }
    if (!this._openSignalling(false, { type: 'open' }, { type: 'keepalive' }, H5S_RTC_RECONNECT_MS)) {
        return;
    }
    this._timers.push(setInterval(function () { self._poll(); }, H5S_RTC_STATS_MS));
};

H5sPlayerRTC.prototype._onMessage = function (data) {
    var msg;
    try {
        msg = JSON.parse(data);
    } catch (e) {
        this._log('ignoring a message that is not JSON');
        return;
    }
    this._log('signal', msg.type);
    if (msg.type === 'iceserver') {
        this._rtcConfig = {
            iceServers: msg.iceServers || [],
            iceTransportPolicy: msg.iceTransportPolicy === 'relay' ? 'relay' : 'all'
        };
    } else if (msg.type === 'offer') {
        this._onOffer(msg);
    } else if (msg.type === 'remoteice') {
        if (this._pc) {
            this._pc.addIceCandidate({ candidate: msg.candidate, sdpMLineIndex: msg.sdpMLineIndex || 0 })
                .catch(function () { /* a candidate we cannot use is not fatal */ });
        }
    } else if (msg.type === 'error') {
        H5sReportError(this, msg.strCode || 'signalling error');
    } else {
        var pb = this._conf.pbconf;
        if (pb && typeof pb.callback === 'function') {
            pb.callback(data, pb.userdata);
        } else {
            this._log('message', data);
        }
    }
};

/* The server offers (video, maybe audio, send-only); we answer and trickle our candidates. */
H5sPlayerRTC.prototype._onOffer = function (msg) {
    var self = this;
    var ws = this._ws;
    /* no "iceserver" message: no STUN/TURN at all (never a public default) */
    var pc = new RTCPeerConnection(this._rtcConfig || { iceServers: [] });
    this._pc = pc;
    pc.ontrack = function (ev) {
        var video = self._video;
        var stream = ev.streams && ev.streams[0] ? ev.streams[0] : null;
        if (!stream) {
            stream = video.srcObject instanceof MediaStream ? video.srcObject : new MediaStream();
            stream.addTrack(ev.track);
        }
        if (video.srcObject !== stream) {
            video.srcObject = stream;
        }
        H5sPlay(self);
    };
    pc.onicecandidate = function (ev) {
        if (ev.candidate && ev.candidate.candidate) {
            self._send({
                type: 'remoteice',
                candidate: ev.candidate.candidate,
                sdpMid: ev.candidate.sdpMid,
                sdpMLineIndex: ev.candidate.sdpMLineIndex,
                usernameFragment: ev.candidate.usernameFragment
            });
        }
    };
    pc.onconnectionstatechange = function () {
        if (self._pc !== pc) {
            return;
        }
        self._log('connection', pc.connectionState);
        if (pc.connectionState === 'failed') {
            H5sReportError(self, 'WebRTC connection failed, reconnecting');
            self._scheduleReconnect(H5S_RTC_RECONNECT_MS);
        }
    };
    pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp }).then(function () {
        return pc.createAnswer();
    }).then(function (answer) {
        return pc.setLocalDescription(answer).then(function () {
            if (self._ws === ws) {
                self._send({ type: 'answer', sdp: answer.sdp });
            }
        });
    }).catch(function (e) {
        if (self._pc === pc) {
            H5sReportError(self, 'cannot answer the offer: ' + e.message);
            self._scheduleReconnect(H5S_RTC_RECONNECT_MS);
        }
    });
};

/* Every second: figures from getStats(), first-picture and stall checks. */
H5sPlayerRTC.prototype._poll = function () {
    var self = this;
    var pc = this._pc;
    var now = Date.now();
    if (this._stopped) {
        return;
    }
    if (!this._playing && now - this._startedAt > H5S_RTC_FIRST_FRAME_MS) {
        this._log('no picture after', H5S_RTC_FIRST_FRAME_MS, 'ms, reconnecting');
        this._scheduleReconnect(H5S_RTC_RECONNECT_MS);
        return;
    }
    if (this._playing && !this._playback && now - this._lastFramesChange > H5S_RTC_STALL_MS) {
        this._log('no frames decoded for', H5S_RTC_STALL_MS, 'ms, reconnecting');
        this._scheduleReconnect(H5S_RTC_RECONNECT_MS);
        return;
    }
    if (!pc) {
        return;
    }
    pc.getStats().then(function (report) {
        if (self._pc === pc) {
            self._onStats(report);
        }
    }).catch(function () { /* closed meanwhile */ });
};

H5sPlayerRTC.prototype._onStats = function (report) {
    var s = this._stats;
    var codecs = {};
    var inbound = null;
    report.forEach(function (r) {
        if (r.type === 'codec') {
            codecs[r.id] = r.mimeType;
        } else if (r.type === 'inbound-rtp' && (r.kind || r.mediaType) === 'video') {
            inbound = r;
        }
    });
    if (!inbound) {
        return;
    }
    s.framesDecoded = inbound.framesDecoded || 0;
    s.width = inbound.frameWidth || 0;
    s.height = inbound.frameHeight || 0;
    s.packetsLost = inbound.packetsLost || 0;
    s.mime = codecs[inbound.codecId] || s.mime;
    if (inbound.jitterBufferEmittedCount) {
        s.latency = inbound.jitterBufferDelay / inbound.jitterBufferEmittedCount;
    }
    if (s.framesDecoded !== this._lastFrames) {
        this._lastFrames = s.framesDecoded;
        this._lastFramesChange = Date.now();
        if (!this._playing) {
            this._playing = true;
            this._failures = 0;
            this._state = 'playing';
            this._error = '';
            this._log('first frames decoded', s.mime, s.width + 'x' + s.height);
        }
    }
};

H5sPlayerRTC.prototype._teardown = function () {
    this._timers.forEach(function (t) { clearInterval(t); });
    this._timers = [];
    var ws = this._ws;
    this._ws = null;
    if (ws) {
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        try {
            ws.close();
        } catch (e) { /* already closed */ }
    }
    var pc = this._pc;
    this._pc = null;
    if (pc) {
        pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null;
        pc.close();
    }
    this._video.srcObject = null;
};

/* ---------------------------------------------------------------- what the socket players share */

/* Consecutive attempts that brought no media back off: 1 s, 1 s, 1 s, 2 s, 3 s, then 5 s. */
var H5S_BACKOFF_MS = [1000, 1000, 1000, 2000, 3000, 5000];
var H5S_KEEPALIVE_MS = 1000; /* the vendor's players send their keepalive every second */

/* The query of a stream URL (live or, with pbconf, playback), as the vendor's players build it. */
function H5sStreamQuery(conf, playback) {
    var q = 'token=' + encodeURIComponent(conf.token);
    var profile = encodeURIComponent(conf.streamprofile || 'main');
    if (playback) {
        var pb = conf.pbconf;
        q += '&playback=true&profile=' + profile +
            '&serverpb=' + encodeURIComponent(pb.serverpb || 'false') +
            '&begintime=' + encodeURIComponent(pb.begintime || '') +
            '&endtime=' + encodeURIComponent(pb.endtime || '') +
            '&filename=' + encodeURIComponent(pb.filename || 'fake');
    } else {
        q += '&profile=' + profile;
    }
    return q + '&session=' + encodeURIComponent(conf.session || '');
}

/* Methods of H5sPlayerWS and H5sPlayerRTC that do not depend on the transport. Each player provides
 * _start(), _teardown() and _healthy() (whether the attempt that just ended had brought media). */
var H5sSocketPlayer = {
    connect: function () {
        if (!this._stopped) {
            return;
        }
        this._stopped = false;
        this._start();
    },
    _send: function (obj) {
        if (this._ws && this._ws.readyState === WebSocket.OPEN) {
            this._ws.send(JSON.stringify(obj));
            return true;
        }
        return false;
    },
    _scheduleReconnect: function (delay) {
        var self = this;
        if (this._stopped || this._reconnectTimer) {
            return;
        }
        if (this._healthy()) {
            this._failures = 0;
        } else {
            this._failures += 1;
            delay = Math.max(delay, H5S_BACKOFF_MS[Math.min(this._failures, H5S_BACKOFF_MS.length) - 1]);
        }
        this._teardown();
        if (this._state !== 'error') {
            this._state = 'reconnecting';
        }
        this._reconnectTimer = setTimeout(function () {
            self._reconnectTimer = null;
            if (!self._stopped) {
                self._reconnects += 1;
                self._start();
            }
        }, delay);
    },
    /* The signalling socket: `hello` once open, `keepalive` every second, H5_START for autoplay playback.
     * A close reconnects, except a 4xxx close of a playback (refused for good: retrying cannot help). */
    _openSignalling: function (binary, hello, keepalive, reconnectMs) {
        var self = this;
        var url = this.wsUrl();
        this._log('connecting', url);
        var ws;
        try {
            ws = new WebSocket(url);
        } catch (e) {
            H5sReportError(this, 'cannot open WebSocket: ' + e.message);
            this._scheduleReconnect(reconnectMs);
            return null;
        }
        if (binary) {
            ws.binaryType = 'arraybuffer';
        }
        this._ws = ws;
        ws.onopen = function () {
            self._log('open');
            if (hello) {
                self._send(hello);
            }
            self._timers.push(setInterval(function () { self._send(keepalive); }, H5S_KEEPALIVE_MS));
            if (self._playback && H5sConfBool(self._conf.pbconf.autoplay, false)) {
                self._send({ cmd: 'H5_START' });
            }
        };
        ws.onmessage = function (ev) {
            self._onMessage(ev.data);
        };
        ws.onerror = function () {
            self._log('socket error');
        };
        ws.onclose = function (ev) {
            if (self._ws !== ws) {
                return;
            }
            self._log('closed', ev.code, ev.reason);
            if (!self._healthy() && ev.reason && ev.reason !== self._error) {
                /* the server says why, e.g. "source offline: connection refused" or "unknown token" */
                H5sReportError(self, ev.reason);
            }
            if (self._playback && ev.code >= 4000 && ev.code < 5000) {
                H5sReportError(self, ev.reason || ('playback refused (' + ev.code + ')'));
                self._state = 'stopped';
                self._stopped = true;
                return;
            }
            self._scheduleReconnect(reconnectMs);
        };
        return ws;
    },
    /* Playback controls (pbconf mode). */
    start: function () {
        return this._send({ cmd: 'H5_START' });
    },
    pause: function () {
        return this._send({ cmd: 'H5_PAUSE' });
    },
    resume: function () {
        return this._send({ cmd: 'H5_RESUME' });
    },
    seek: function (seconds) {
        return this._send({ cmd: 'H5_SEEK', nSeekTime: Number(seconds) });
    },
    speed: function (n) {
        return this._send({ cmd: 'H5_SPEED', nSpeed: Number(n) });
    }
};

/* The state both socket players start with. */
function H5sSocketPlayerInit(player, conf, name) {
    player._conf = conf;
    player._video = H5sGetVideoElement(conf);
    player._playback = !!conf.pbconf;
    player._log = H5sLogger(conf, name);
    player._state = 'idle';
    player._error = '';
    player._reconnects = 0;
    player._posterUpdate = 0;
    player._failures = 0;
    player._stopped = true;
    player._ws = null;
    player._timers = [];
    player._reconnectTimer = null;
    player._video.muted = H5sConfBool(conf.muted, true);
    player._video.playsInline = true;
}

function H5sMixin(target, source) {
    Object.keys(source).forEach(function (k) { target[k] = source[k]; });
}

H5sPlayerWS.prototype._healthy = function () {
    return this._primed;
};
H5sPlayerRTC.prototype._healthy = function () {
    return this._playing;
};
H5sMixin(H5sPlayerWS.prototype, H5sSocketPlayer);
H5sMixin(H5sPlayerRTC.prototype, H5sSocketPlayer);

function H5sIsIOS() {
    var platform = navigator.platform || '';
    if (/iPad|iPhone|iPod/.test(platform)) {
        return true;
    }
    /* iPadOS 13+ reports itself as a Mac with a touch screen */
    return platform === 'MacIntel' && navigator.maxTouchPoints > 1;
}

/* Which player suits this browser: 'ws' (MSE), else 'rtc' (iOS Safari has no MediaSource but has
 * WebRTC), else 'hls'. Each kind maps to a constructor in H5sPlayerKinds. */
function H5sPlayerKind(conf) {
    if (window.MediaSource && !H5sIsIOS()) {
        return 'ws';
    }
    return window.RTCPeerConnection ? 'rtc' : 'hls';
}

var H5sPlayerKinds = {
    ws: H5sPlayerWS,
    rtc: H5sPlayerRTC,
    hls: H5sPlayerHls
};

function H5sPlayerCreate(conf) {
    var Player = H5sPlayerKinds[H5sPlayerKind(conf)];
    return new Player(conf);
}

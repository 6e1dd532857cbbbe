/*
 * status.js - the console's status page: CPU, memory, network and disk from GetRunInfo, and per source
 * the bitrate, frame rate and viewers from /metrics (read with the session), polled every 2 s and drawn
 * as small live charts of the last few minutes. Plain ES2017; uses console.js.
 */

var H5GATE_STATUS_MS = 2000;
var H5GATE_STATUS_POINTS = 90;  /* 3 minutes at 2 s */

/* "name{a="x",b="y"} 12.5" lines of the Prometheus text format -> [{name, labels, value}]. */
function h5gateParseMetrics(text) {
    var out = [];
    String(text).split('\n').forEach(function (line) {
        if (!line || line.charAt(0) === '#') {
            return;
        }
        var m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
        if (!m) {
            return;
        }
        var labels = {};
        (m[2] || '').replace(/(\w+)="((?:[^"\\]|\\.)*)"/g, function (all, key, value) {
            labels[key] = value.replace(/\\(.)/g, '$1');
            return all;
        });
        out.push({ name: m[1], labels: labels, value: parseFloat(m[3]) });
    });
    return out;
}

function h5gateBits(bps) {
    if (bps >= 1e6) {
        return (bps / 1e6).toFixed(bps >= 1e7 ? 0 : 1) + ' Mbit/s';
    }
    return Math.round(bps / 1e3) + ' kbit/s';
}

function h5gateBytes(n) {
    return n >= 1e12 ? (n / 1e12).toFixed(1) + ' TB' : (n / 1e9).toFixed(1) + ' GB';
}

/* A small line chart on a canvas: one or two series, scaled to their maximum (or a fixed top). */
function h5gateChart(canvas, series, top) {
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || 300;
    var height = canvas.clientHeight || 70;
    if (canvas.width !== Math.round(width * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
    }
    var ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var style = getComputedStyle(document.documentElement);
    var max = top || Math.max.apply(null, [1].concat.apply([], series.map(function (s) { return s.values; })));
    ctx.strokeStyle = style.getPropertyValue('--border');
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, height - 0.5);
    ctx.lineTo(width, height - 0.5);
    ctx.stroke();
    series.forEach(function (s) {
        var n = s.values.length;
        if (n < 2) {
            return;
        }
        ctx.strokeStyle = style.getPropertyValue(s.color).trim() || s.color;
        ctx.lineWidth = 1.6;
        ctx.beginPath();
        s.values.forEach(function (v, i) {
            var x = width * (H5GATE_STATUS_POINTS - n + i) / (H5GATE_STATUS_POINTS - 1);
            var y = height - 3 - (height - 6) * Math.min(v, max) / max;
            if (i === 0) {
                ctx.moveTo(x, y);
            } else {
                ctx.lineTo(x, y);
            }
        });
        ctx.stroke();
    });
}

var H5gateStatus = {
    history: { cpu: [], memory: [], netIn: [], netOut: [] },
    bitrates: {},       /* token -> recent bits/s */
    samples: 0,         /* polls answered: a test waits for it to move */

    push: function (list, value) {
        list.push(value);
        if (list.length > H5GATE_STATUS_POINTS) {
            list.shift();
        }
    },

    stat: function (id, value) {
        var card = document.getElementById(id);
        card.querySelector('.stat-value').textContent = value;
        return card;
    },

    poll: function () {
        var self = this;
        var session = h5gateSession();
        var metrics = fetch('/metrics?session=' + encodeURIComponent(session), {
            headers: { Authorization: 'token ' + session }, cache: 'no-store'
        }).then(function (resp) {
            return resp.ok ? resp.text() : '';
        });
        return Promise.all([h5gateApi('GetRunInfo', {}), h5gateApi('GetSrc', {}), metrics]).then(function (got) {
            self.showSystem(got[0]);
            self.showSources(got[1].src || [], h5gateParseMetrics(got[2]));
            self.samples += 1;
            document.body.setAttribute('data-samples', String(self.samples));
        }).catch(function (err) {
            h5gateNotify('cannot read the status: ' + err.message, true);
        });
    },

    showSystem: function (info) {
        var h = this.history;
        this.push(h.cpu, info.nCPUUsage || 0);
        this.push(h.memory, info.nMemoryUsage || 0);
        this.push(h.netIn, (info.nNetworkInK || 0) * 1000);
        this.push(h.netOut, (info.nNetworkOutK || 0) * 1000);
        h5gateChart(this.stat('stat-cpu', info.nCPUUsage + ' %').querySelector('canvas'),
            [{ values: h.cpu, color: '--accent' }], 100);
        var memory = this.stat('stat-memory', info.nMemoryUsage + ' %');
        memory.title = 'of ' + h5gateBytes(info.nTotalMemoryByte || 0);
        h5gateChart(memory.querySelector('canvas'), [{ values: h.memory, color: '--ok' }], 100);
        h5gateChart(this.stat('stat-network', h5gateBits(h.netIn[h.netIn.length - 1]) + ' / ' +
            h5gateBits(h.netOut[h.netOut.length - 1])).querySelector('canvas'),
        [{ values: h.netIn, color: '--accent' }, { values: h.netOut, color: '--warn' }]);
        var total = info.nTotalSpaceByte || 0;
        var used = total - (info.nFreeSpaceByte || 0);
        var disk = this.stat('stat-disk', total ? Math.round(100 * used / total) + ' %' : '–');
        disk.querySelector('.meter i').style.width = (total ? 100 * used / total : 0) + '%';
        disk.querySelector('.stat-note').textContent = h5gateBytes(info.nFreeSpaceByte || 0) + ' free of ' +
            h5gateBytes(total) + ' · recordings: ' + h5gateBytes(info.nRecordFreeSpaceByte || 0) + ' free';
        var run = info.nRunTimeSec || 0;
        document.getElementById('uptime').textContent = 'up ' + Math.floor(run / 86400) + ' d ' +
            Math.floor(run % 86400 / 3600) + ' h ' + Math.floor(run % 3600 / 60) + ' min';
    },

    showSources: function (sources, metrics) {
        var self = this;
        var by = {};
        metrics.forEach(function (m) {
            var token = m.labels.token;
            if (!token) {
                return;
            }
            var entry = by[token] = by[token] || { bitrate: 0, fps: 0, ws: 0, webrtc: 0, hls: 0 };
            if (m.name === 'h5gate_source_bitrate_bps') {
                entry.bitrate = m.value;
            } else if (m.name === 'h5gate_source_fps') {
                entry.fps = m.value;
            } else if (m.name === 'h5gate_source_viewers') {
                entry[m.labels.protocol] = m.value;
            }
        });
        var body = document.getElementById('source-status-rows');
        var rows = {};
        Array.prototype.slice.call(body.children).forEach(function (row) { rows[row.dataset.token] = row; });
        sources.forEach(function (src, i) {
            var m = by[src.strToken] || { bitrate: 0, fps: 0, ws: 0, webrtc: 0, hls: 0 };
            var list = self.bitrates[src.strToken] = self.bitrates[src.strToken] || [];
            self.push(list, m.bitrate);
            var row = rows[src.strToken];
            if (!row) {
                row = h5gateEl('tr', { 'data-token': src.strToken }, [
                    h5gateEl('td', { class: 'name' }), h5gateEl('td', { class: 'state' }),
                    h5gateEl('td', { class: 'num bitrate' }),
                    h5gateEl('td', { class: 'hide-narrow' }, [h5gateEl('canvas', { class: 'spark', width: '160',
                        height: '28' })]),
                    h5gateEl('td', { class: 'num fps hide-narrow' }), h5gateEl('td', { class: 'num viewers' }),
                    h5gateEl('td', { class: 'protocols hide-narrow muted' })
                ]);
            }
            body.insertBefore(row, body.children[i] || null);
            delete rows[src.strToken];
            row.querySelector('.name').textContent = src.strName + ' (' + src.strToken + ')';
            row.querySelector('.state').textContent = src.bOnline ? 'online' : 'offline';
            row.querySelector('.state').className = 'state ' + (src.bOnline ? 'ok' : 'bad');
            row.querySelector('.bitrate').textContent = h5gateBits(m.bitrate);
            row.querySelector('.fps').textContent = m.fps.toFixed(1);
            row.querySelector('.viewers').textContent = String(m.ws + m.webrtc + m.hls);
            row.querySelector('.protocols').textContent = m.ws + ' / ' + m.webrtc + ' / ' + m.hls;
            h5gateChart(row.querySelector('canvas'), [{ values: list, color: '--accent' }]);
        });
        Object.keys(rows).forEach(function (token) { rows[token].remove(); });
    }
};

function h5gateStatusPage() {
    if (!h5gatePageStart()) {
        return;
    }
    H5gateStatus.poll();
    setInterval(function () { H5gateStatus.poll(); }, H5GATE_STATUS_MS);
}

"""Inline CSS and JavaScript of the standalone HTML report (no external resources)."""

_MONO = "ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
CSS = f"""
*{{box-sizing:border-box}}h1{{font-size:20px;margin:0 0 8px}}h2{{font-size:15px;margin:18px 0 6px}}
body{{font:14px/1.45 system-ui,sans-serif;margin:0;padding:16px 24px;color:#1d1d1f;background:#fafafa}}
table.meta{{border-collapse:collapse;font-size:12px;margin:4px 0 10px}}details{{font-size:13px;color:#444}}
table.meta td,table.meta th{{padding:1px 12px 1px 0;vertical-align:top}}
table.meta th{{text-align:left;white-space:nowrap}}table.meta td:first-child{{color:#666}}
.legend{{display:flex;align-items:center;gap:8px;font-size:12px;color:#444;margin:6px 0 12px}}
.legend .bar{{width:220px;height:12px;border:1px solid #bbb;border-radius:2px}}
.legend .ticks{{display:flex;justify-content:space-between;width:220px}}
.prompt{{white-space:pre-wrap;background:#eef1f5;border-left:3px solid #8a9bb5;padding:6px 10px;
margin:0 0 10px;font:13px/1.4 {_MONO}}}
.grid{{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:14px}}
.card{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 12px;min-width:0}}
.card h3{{font-size:13px;margin:0 0 6px;color:#333}}.card h3 small{{font-weight:400;color:#777}}
.heat{{white-space:pre-wrap;word-break:break-word;font:13px/1.7 {_MONO};margin:0 0 8px}}
.tok{{border-radius:2px;cursor:default}}.tok:hover,.tok:focus{{outline:2px solid #1a56db}}
.tok.fork{{box-shadow:inset 0 -3px 0 #7d1a12}}.ws{{color:#8a8a8a}}
svg{{max-width:100%;height:auto}}svg.plot{{width:100%;max-width:760px;height:auto;display:block;margin:4px 0}}
svg.plot text{{font-size:11px;fill:#555}}svg.plot .key{{font-size:10px}}
svg.plot .axis{{stroke:#999}}svg.plot .gl{{stroke:#eee}}svg.plot .cursor{{stroke:#1a56db}}
svg.plot .line{{fill:none;stroke:#2c6bb3;stroke-width:1.5;stroke-linejoin:round}}
svg.plot .mean{{stroke:#888;stroke-dasharray:2 3}}svg.plot .forkdot,svg.plot .k-f{{fill:#b3261e}}
svg.plot .wmean{{fill:none;stroke:#e07b00;stroke-width:1.5;stroke-dasharray:6 3}}
svg.plot .k-line{{fill:#2c6bb3}}svg.plot .k-w{{fill:#e07b00}}svg.plot .k-m{{fill:#888}}
dl.sum{{display:grid;grid-template-columns:auto 1fr;gap:1px 12px;font-size:12px;margin:6px 0}}
dl.sum dt{{color:#666}}dl.sum dd{{margin:0;font-variant-numeric:tabular-nums}}.forks{{font-size:12px}}
.forks code{{background:#f3e3e1;border-radius:3px;padding:0 3px;white-space:pre}}
#tip{{position:fixed;z-index:10;max-width:340px;background:#1f2430;color:#f2f2f2;font-size:12px;
border-radius:5px;padding:7px 9px;box-shadow:0 3px 12px rgba(0,0,0,.3);pointer-events:none}}
#tip .t{{font:13px {_MONO};white-space:pre;color:#fff;background:#3a4254;border-radius:3px;
padding:0 4px;margin-right:6px}}#tip .pos{{color:#aab}}
#tip table{{border-collapse:collapse;margin-top:4px;width:100%}}#tip td:last-child{{text-align:right}}
#tip td{{padding:0 6px 0 0;font-family:{_MONO};white-space:pre}}
#tip tr.chosen td{{color:#ffd866;font-weight:600}}
"""

JS = r"""
(function(){
var data=JSON.parse(document.getElementById('entrolab-data').textContent);
var tip=document.getElementById('tip'),cur=null;
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
if(text!==undefined)e.textContent=text;return e;}
function cursor(heat,i){var svg=document.getElementById('plot-'+heat.dataset.t);if(!svg)return;
var c=svg.querySelector('.cursor');if(i<0){c.setAttribute('visibility','hidden');return;}
var x=(+svg.dataset.x0+i*svg.dataset.dx).toFixed(1);c.setAttribute('x1',x);c.setAttribute('x2',x);
c.setAttribute('visibility','visible');}
function show(tok){var heat=tok.parentNode,i=+tok.dataset.i,d=data[+heat.dataset.t][i];
tip.textContent='';var hd=el('div');hd.appendChild(el('span','t',tok.textContent.replace(/\n/g,'')));
hd.appendChild(el('span','pos','position '+i));tip.appendChild(hd);
tip.appendChild(el('div','','entropy '+d[0]+' nats'));
tip.appendChild(el('div','','p '+d[1]+' \u00b7 logprob '+d[2]+' \u00b7 rank '+d[3]));
if(d[4].length){var tb=el('table');d[4].forEach(function(a){var tr=el('tr',a[2]?'chosen':'');
tr.appendChild(el('td','',a[0]));tr.appendChild(el('td','',a[1]));tb.appendChild(tr);});
tip.appendChild(tb);}
tip.hidden=false;var r=tok.getBoundingClientRect(),w=tip.offsetWidth,h=tip.offsetHeight;
var left=Math.max(4,Math.min(r.left,window.innerWidth-w-4));
var top=r.bottom+6;if(top+h>window.innerHeight-4)top=Math.max(4,r.top-h-6);
tip.style.left=left+'px';tip.style.top=top+'px';cursor(heat,i);cur=tok;}
function hide(){tip.hidden=true;if(cur)cursor(cur.parentNode,-1);cur=null;}
function find(e){var t=e.target;return t&&t.closest?t.closest('.tok'):null;}
document.addEventListener('mouseover',function(e){var t=find(e);if(t)show(t);});
document.addEventListener('mouseout',function(e){if(find(e))hide();});
document.addEventListener('focusin',function(e){var t=find(e);if(t)show(t);});
document.addEventListener('focusout',function(e){if(find(e))hide();});
document.addEventListener('keydown',function(e){if(e.key==='Escape')hide();});
})();
"""
